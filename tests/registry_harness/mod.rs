//! Test harness for registry clients: real CNCF distribution registries, a token server and a
//! fault-injecting proxy. Include with `#[path = "registry_harness/mod.rs"] mod registry_harness;`.
#![allow(dead_code, unused_imports)]

pub mod proxy;
pub mod registry;
pub mod token;

pub use proxy::{Failure, FaultProxy, Kind, Outcome, Seen, ALWAYS};
pub use registry::{http_status, Auth, Registry, TokenAuth};
pub use token::{TokenRequest, TokenServer};
