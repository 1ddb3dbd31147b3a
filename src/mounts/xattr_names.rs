//! Extended attribute names of pass-through mounts, as the guest and the host see them. The
//! guest's `trusted.*` attributes are stored on the host as `user.virtiofs.trusted.*`:
//! overlayfs in the guest marks its upper directories with `trusted.overlay.*`, which the
//! daemon could only write with CAP_SYS_ADMIN, and which would mean something to the host's
//! own overlayfs. A guest name that already starts with `user.virtiofs.` is escaped the same
//! way, so that no guest can forge one of the mapped names; host names under
//! `user.virtiofs.` that no guest name maps to are hidden.

use std::borrow::Cow;
use std::ffi::{CStr, CString};

const TRUSTED: &[u8] = b"trusted.";
const HOST_PREFIX: &[u8] = b"user.virtiofs.";

/// The host's name for the guest's `name`.
pub(super) fn to_host(name: &CStr) -> Cow<'_, CStr> {
    let bytes = name.to_bytes();
    if bytes.starts_with(TRUSTED) || bytes.starts_with(HOST_PREFIX) {
        let mut host = HOST_PREFIX.to_vec();
        host.extend_from_slice(bytes);
        // `name` had no NUL inside, nor has the prefix.
        Cow::Owned(CString::new(host).unwrap_or_default())
    } else {
        Cow::Borrowed(name)
    }
}

/// The guest's name for a host name, or None to hide it.
fn to_guest(host: &[u8]) -> Option<&[u8]> {
    match host.strip_prefix(HOST_PREFIX) {
        Some(inner) if inner.starts_with(TRUSTED) || inner.starts_with(HOST_PREFIX) => Some(inner),
        Some(_) => None,
        // Without CAP_SYS_ADMIN the host's own trusted.* are not listed; hide them anyway.
        None if host.starts_with(TRUSTED) => None,
        None => Some(host),
    }
}

/// A host `listxattr` reply (names, each NUL-terminated) as the guest sees it.
pub(super) fn list_to_guest(host: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(host.len());
    for name in host.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if let Some(guest) = to_guest(name) {
            out.extend_from_slice(guest);
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_names_live_in_the_user_namespace() {
        assert_eq!(
            to_host(c"trusted.overlay.opaque").to_bytes(),
            b"user.virtiofs.trusted.overlay.opaque"
        );
        assert_eq!(
            to_host(c"user.virtiofs.trusted.x").to_bytes(),
            b"user.virtiofs.user.virtiofs.trusted.x",
            "a guest cannot forge a mapped name"
        );
        assert_eq!(to_host(c"user.mine").to_bytes(), b"user.mine");
        assert_eq!(
            to_host(c"security.capability").to_bytes(),
            b"security.capability"
        );
    }

    #[test]
    fn lists_come_back_in_the_guests_names() {
        let host = b"user.a\0user.virtiofs.trusted.overlay.opaque\0trusted.host\0user.virtiofs.other\0user.virtiofs.user.virtiofs.x\0security.selinux\0";
        assert_eq!(
            list_to_guest(host),
            b"user.a\0trusted.overlay.opaque\0user.virtiofs.x\0security.selinux\0"
        );
        assert!(list_to_guest(b"").is_empty());
        for name in [c"trusted.t", c"user.virtiofs.v", c"user.u"] {
            let mut listed = to_host(name).to_bytes().to_vec();
            listed.push(0);
            let mut want = name.to_bytes().to_vec();
            want.push(0);
            assert_eq!(list_to_guest(&listed), want, "{name:?} round trip");
        }
    }
}
