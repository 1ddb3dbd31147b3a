//! Looking at images without mounting them: listings, statistics and sharing, integrity checks.

mod check;
mod list;
mod stats;

pub use check::{check, CheckReport};
pub use list::list;
pub use stats::{inspect, ImageStats, InspectReport};
