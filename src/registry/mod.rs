//! OCI distribution client and image transfers: `push`, `pull` and `copy` between registries
//! and layouts, with authentication (anonymous, basic, bearer tokens), TLS options, bounded
//! parallel blob transfers and retries. Async (tokio): the work is network I/O.

mod api;
mod challenge;
mod client;
mod credentials;
mod error;
mod history;
mod reference;
mod transfer;

pub use api::Repository;
pub use challenge::Challenge;
pub use client::{Client, ClientOptions, Payload};
pub use credentials::Credentials;
pub use error::{RegistryError, StatusError};
pub use reference::{Location, Reference, Target};
pub use transfer::{copy, copy_blocking, NoProgress, Progress, Report, TransferOptions};
