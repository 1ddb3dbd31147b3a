//! Looking at images without mounting them: listings, statistics and sharing, integrity checks,
//! and turning fs-verity on for an image's blobs.

mod check;
mod list;
mod stats;
mod verity;

pub use check::{check, CheckReport};
pub use list::list;
pub use stats::{inspect, ImageStats, InspectReport};
pub use verity::{enable_fs_verity, VerityReport};
