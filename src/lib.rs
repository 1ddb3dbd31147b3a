//! PuzzleFS images: build, read, extract, and serve them to virtual machines.
//!
//! Layers, lowest first: [`format`] (metadata types), [`oci`] (image layout), [`chunk`]
//! (chunking, digests, compression), [`builder`], [`reader`], [`extract`], [`inspect`], [`registry`] (push, pull, copy), [`fs`]
//! (the FUSE file system), [`mounts`] (the run-time mount table), [`api`] (the
//! nydusd-compatible HTTP API that drives it), [`daemon`] (vhost-user-fs).
//! Each only uses the ones before it.

pub mod api;
pub mod builder;
pub mod chunk;
pub mod daemon;
pub mod extract;
pub mod format;
pub mod fs;
pub mod inspect;
pub mod mounts;
pub mod oci;
pub mod reader;
pub mod registry;
