//! Dropping capabilities: what the served mode does not need leaves the effective, permitted,
//! inheritable, ambient and bounding sets, so nothing can bring it back.

use rustix::io::Errno;
use rustix::thread::{
    capabilities, clear_ambient_capability_set, remove_capability_from_bounding_set,
    set_capabilities, CapabilitySet, CapabilitySets,
};

use super::SandboxError;

/// What virtiofsd keeps for a shared directory (it may need to read any file and act as any
/// owner); fuse-backend-rs's pass-through file system is the same design.
pub(super) const PASSTHROUGH: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::SETFCAP);

/// [`PASSTHROUGH`] plus DAC_READ_SEARCH, for a shared directory served read-write:
/// fuse-backend-rs makes hard links with `linkat(fd, "", ..., AT_EMPTY_PATH)` on the O_PATH
/// descriptor it holds for the inode. Linux allows that only with DAC_READ_SEARCH, or (since
/// 6.10) when the descriptor was opened under the caller's very credentials, which the
/// per-request credential switch (setresuid/setresgid and back) replaces: without it, a hard
/// link fails with ENOENT once any request of a non-root guest user ran on that thread (and
/// always on kernels before 6.10). virtiofsd needs none of it because it links through
/// `/proc/self/fd/N`. The capability's other use, `open_by_handle_at` (reaching files outside
/// the shared directory by handle), is never in the seccomp allow-list.
pub(super) const WRITABLE_PASSTHROUGH: CapabilitySet =
    PASSTHROUGH.union(CapabilitySet::DAC_READ_SEARCH);

/// Keeps only `keep` (of what this thread has). Call before starting threads: capabilities
/// belong to each thread and new threads copy their creator's.
pub(super) fn keep_only(keep: CapabilitySet) -> Result<(), SandboxError> {
    let have = capabilities(None).map_err(SandboxError::setup("read capabilities"))?;
    for (_, cap) in CapabilitySet::all().iter_names() {
        if keep.contains(cap) {
            continue;
        }
        match remove_capability_from_bounding_set(cap) {
            // EINVAL: a capability this kernel does not know.
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => return Err(SandboxError::setup("drop from the bounding set")(e)),
        }
    }
    match clear_ambient_capability_set() {
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(SandboxError::setup("clear ambient capabilities")(e)),
    }
    let kept = have.permitted & keep;
    set_capabilities(
        None,
        CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(SandboxError::setup("drop capabilities"))
}
