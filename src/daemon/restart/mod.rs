//! Crash recovery (`--sandbox namespace --reconnect`, serving an image or a mount table):
//! the process a VMM or Kata holds becomes a [`Respawner`]. It keeps the listening socket and
//! what the guest negotiated (its FUSE INIT request), and runs the serving side as a child
//! generation (`waiter -> daemon`, a fresh exec of this binary each time). When a generation
//! dies (a SIGKILL, a panic, a seccomp kill) it starts the next one at once: an image is
//! opened again by its manifest digest, a mount table is rebuilt from the journal the API
//! keeps (sent over the generation's control channel), so every node id the guest holds for
//! an image names the same file; the INIT request is replayed into the new FUSE server, since
//! a reconnecting VMM's guest never sends INIT again. The front end reconnects to the same
//! socket (cloud-hypervisor does).

mod notes;
mod respawner;
mod resume;

pub(crate) use notes::{Note, NoteSender};
pub use respawner::Respawner;
pub(crate) use resume::{Resume, RESUME_ENV};
