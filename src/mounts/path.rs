//! Mount points: absolute, normalized paths, split into the names the table's directories
//! hold.

use super::MountError;

/// Longest mount point accepted, in bytes.
pub const MAX_MOUNTPOINT_BYTES: usize = 4096;
/// Most components in a mount point.
pub const MAX_DEPTH: usize = 64;
const NAME_MAX: usize = 255;

/// A checked mount point: `/a/b/c` as `["a", "b", "c"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mountpoint {
    names: Vec<Vec<u8>>,
}

impl Mountpoint {
    /// Checks `path`: absolute, no `.` or `..`, no empty component (one trailing `/` is
    /// allowed), no NUL, names of at most 255 bytes, not `/` itself.
    pub fn parse(path: &str) -> Result<Self, MountError> {
        let bad = |reason: &str| MountError::BadMountpoint {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        if path.len() > MAX_MOUNTPOINT_BYTES {
            return Err(bad("longer than 4096 bytes"));
        }
        let rest = path.strip_prefix('/').ok_or_else(|| bad("not absolute"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(bad("the root cannot be a mount point"));
        }
        let mut names = Vec::new();
        for name in rest.split('/') {
            match name {
                "" => return Err(bad("empty path component")),
                "." | ".." => return Err(bad("'.' and '..' are not allowed")),
                n if n.contains('\0') => return Err(bad("NUL in the path")),
                n if n.len() > NAME_MAX => return Err(bad("a component is over 255 bytes")),
                n => names.push(n.as_bytes().to_vec()),
            }
        }
        if names.len() > MAX_DEPTH {
            return Err(bad("more than 64 components"));
        }
        Ok(Mountpoint { names })
    }

    /// Its names, outermost first.
    pub fn names(&self) -> &[Vec<u8>] {
        &self.names
    }

    /// The first `n` names of it.
    pub(super) fn prefix(&self, n: usize) -> Mountpoint {
        Mountpoint {
            names: self.names[..n.min(self.names.len())].to_vec(),
        }
    }

    /// The path, normalized (`/a/b`).
    pub fn display(&self) -> String {
        let mut s = String::new();
        for n in &self.names {
            s.push('/');
            s.push_str(&String::from_utf8_lossy(n));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        let m = Mountpoint::parse("/rafs/c1/lowerdir").unwrap();
        assert_eq!(
            m.names(),
            [b"rafs".to_vec(), b"c1".to_vec(), b"lowerdir".to_vec()]
        );
        assert_eq!(m.display(), "/rafs/c1/lowerdir");
        assert_eq!(
            Mountpoint::parse("/containers/").unwrap().display(),
            "/containers"
        );
    }

    #[test]
    fn refuses_everything_else() {
        let long = format!("/{}", "a".repeat(256));
        let deep = "/a".repeat(65);
        let huge = format!("/{}", "a/".repeat(2100));
        for bad in [
            "", "/", "//", "rel/path", "/a//b", "/a/./b", "/a/..", "/..", "/a\0b", &long, &deep,
            &huge, "/a//",
        ] {
            let e = Mountpoint::parse(bad).unwrap_err();
            assert!(
                matches!(e, MountError::BadMountpoint { .. }),
                "{bad:?}: {e}"
            );
        }
    }
}
