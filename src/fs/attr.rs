//! Node attributes as the kernel sees them: `stat`, `statfs`, directory entry types, access.

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, Attr};
use fuse_backend_rs::api::filesystem::{Context, FileSystem};

use super::errno::OpError;
use crate::reader::{InodeTable, Node, NodeData};

/// Block size reported in `st_blksize` and `statfs`.
pub(crate) const BLOCK_SIZE: u64 = 4096;

/// The `stat` of a node, exactly as the image records it. The modification time stands in
/// for access and change times too.
pub(crate) fn stat(node: &Node) -> stat64 {
    let attr = Attr {
        ino: node.ino,
        size: node.size,
        blocks: blocks_512(node),
        // The kernel reads these as signed: times before the epoch survive the cast.
        atime: node.mtime_sec as u64,
        mtime: node.mtime_sec as u64,
        ctime: node.mtime_sec as u64,
        atimensec: node.mtime_nsec,
        mtimensec: node.mtime_nsec,
        ctimensec: node.mtime_nsec,
        mode: node.mode,
        nlink: node.nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: fuse_rdev(node.rdev()),
        blksize: BLOCK_SIZE as u32,
        flags: 0,
    };
    stat64::from(attr)
}

/// 512-byte blocks of a file stored in whole 4 KiB blocks.
fn blocks_512(node: &Node) -> u64 {
    node.size.div_ceil(BLOCK_SIZE) * (BLOCK_SIZE / 512)
}

/// FUSE carries device numbers in 32 bits, in the kernel's `new_encode_dev` layout: 12 bits
/// of major and 20 of minor. Larger numbers cannot be expressed and are truncated.
fn fuse_rdev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The `d_type` of a directory entry.
pub(crate) fn dtype(mode: u32) -> u32 {
    (mode & libc::S_IFMT) >> 12
}

/// Sizes reported by `statfs`, computed once per image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Totals {
    /// 4 KiB blocks of all file data (hard links counted once).
    pub blocks: u64,
    /// Nodes in the image.
    pub files: u64,
}

impl Totals {
    pub(crate) fn of(table: &InodeTable) -> Self {
        let mut blocks = 0u64;
        for id in 0..table.len() {
            let node = table.node(id as u32);
            if matches!(node.data, NodeData::File(_)) {
                blocks = blocks.saturating_add(node.size.div_ceil(BLOCK_SIZE));
            }
        }
        Totals {
            blocks,
            files: table.len() as u64,
        }
    }

    /// A full, read-only file system: no free blocks or inodes.
    pub(crate) fn statvfs(&self) -> statvfs64 {
        let mut st = zeroed_statvfs();
        st.f_bsize = BLOCK_SIZE;
        st.f_frsize = BLOCK_SIZE;
        st.f_blocks = self.blocks;
        st.f_bfree = 0;
        st.f_bavail = 0;
        st.f_files = self.files;
        st.f_ffree = 0;
        st.f_favail = 0;
        st.f_namemax = 255;
        st.f_flag = libc::ST_RDONLY | libc::ST_NOSUID | libc::ST_NODEV;
        st
    }
}

/// An all-zero `statvfs64` (it has private padding, so no struct literal), taken from the
/// `FileSystem` trait's own default `statfs` reply rather than from `unsafe` code.
fn zeroed_statvfs() -> statvfs64 {
    struct Defaults;
    impl FileSystem for Defaults {
        type Inode = u64;
        type Handle = u64;
    }
    Defaults
        .statfs(&Context::default(), 0)
        .expect("the default statfs never fails")
}

/// `access(2)` semantics: writing is never allowed; otherwise the permission bits decide
/// for the caller's uid and primary gid, and root may read anything and execute anything
/// with an execute bit (or any directory).
pub(crate) fn check_access(node: &Node, uid: u32, gid: u32, mask: u32) -> Result<(), OpError> {
    let mask = mask as i32;
    if mask & libc::W_OK != 0 {
        return Err(OpError::ReadOnly);
    }
    if mask == libc::F_OK {
        return Ok(());
    }
    let is_dir = matches!(node.data, NodeData::Dir { .. });
    if uid == 0 {
        if mask & libc::X_OK != 0 && !is_dir && node.mode & 0o111 == 0 {
            return Err(OpError::PermissionDenied);
        }
        return Ok(());
    }
    let bits = if uid == node.uid {
        node.mode >> 6
    } else if gid == node.gid {
        node.mode >> 3
    } else {
        node.mode
    } & 0o7;
    // R_OK, W_OK and X_OK are 4, 2 and 1, the same as the permission bits.
    if (mask as u32) & !bits & 0o7 != 0 {
        return Err(OpError::PermissionDenied);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(mode: u32, size: u64) -> Node {
        Node {
            ino: 42,
            mode,
            uid: 1000,
            gid: 100,
            mtime_sec: -5,
            mtime_nsec: 123_456_789,
            nlink: 3,
            size,
            xattrs: Default::default(),
            data: if mode & libc::S_IFMT == libc::S_IFDIR {
                NodeData::Dir {
                    entries: Default::default(),
                    parent: 0,
                }
            } else {
                NodeData::File(Default::default())
            },
        }
    }

    #[test]
    fn stat_reports_the_image() {
        let st = stat(&node(libc::S_IFREG | 0o4755, 5000));
        assert_eq!(st.st_ino, 42);
        assert_eq!(st.st_mode, libc::S_IFREG | 0o4755);
        assert_eq!(st.st_nlink, 3);
        assert_eq!((st.st_uid, st.st_gid), (1000, 100));
        assert_eq!(st.st_size, 5000);
        assert_eq!(st.st_blocks, 16);
        assert_eq!(st.st_blksize, 4096);
        assert_eq!((st.st_mtime, st.st_mtime_nsec), (-5, 123_456_789));
        assert_eq!((st.st_atime, st.st_ctime_nsec), (-5, 123_456_789));
        assert_eq!(st.st_rdev, 0);
        // A device's number: the kernel's new_decode_dev of the 32-bit value gives back 7:300.
        let mut chr = node(libc::S_IFCHR | 0o600, 0);
        chr.data = NodeData::Other(libc::makedev(7, 300));
        let r = stat(&chr).st_rdev as u32;
        let (major, minor) = ((r & 0xfff00) >> 8, (r & 0xff) | ((r >> 12) & 0xfff00));
        assert_eq!((major, minor), (7, 300));
        assert_eq!(dtype(st.st_mode), u32::from(libc::DT_REG));
        assert_eq!(dtype(libc::S_IFLNK | 0o777), u32::from(libc::DT_LNK));
    }

    #[test]
    fn statvfs_is_full_and_read_only() {
        let st = Totals {
            blocks: 10,
            files: 3,
        }
        .statvfs();
        assert_eq!((st.f_blocks, st.f_bfree, st.f_bavail), (10, 0, 0));
        assert_eq!((st.f_files, st.f_ffree), (3, 0));
        assert_eq!((st.f_bsize, st.f_namemax), (4096, 255));
        assert!(st.f_flag & libc::ST_RDONLY != 0);
    }

    #[test]
    fn access_follows_permission_bits() {
        let f = node(libc::S_IFREG | 0o750, 1);
        let errno = |r: Result<(), OpError>| r.err().map(|e| e.errno());
        assert_eq!(errno(check_access(&f, 1000, 1, 7 & !2)), None);
        assert_eq!(errno(check_access(&f, 1000, 1, 2)), Some(libc::EROFS));
        assert_eq!(errno(check_access(&f, 0, 0, 2)), Some(libc::EROFS));
        assert_eq!(errno(check_access(&f, 5, 100, 4 | 1)), None);
        assert_eq!(errno(check_access(&f, 5, 5, 4)), Some(libc::EACCES));
        assert_eq!(errno(check_access(&f, 5, 5, 0)), None);
        assert_eq!(errno(check_access(&f, 0, 0, 4 | 1)), None);
        let none = node(libc::S_IFREG, 1);
        assert_eq!(errno(check_access(&none, 0, 0, 4)), None);
        assert_eq!(errno(check_access(&none, 0, 0, 1)), Some(libc::EACCES));
        let dir = node(libc::S_IFDIR, 0);
        assert_eq!(errno(check_access(&dir, 0, 0, 1)), None);
    }
}
