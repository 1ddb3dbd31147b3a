//! The kernel's fs-verity on blob files: enable it, and read a file's measurement.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `FS_IOC_ENABLE_VERITY`: `_IOW('f', 133, struct fsverity_enable_arg)` (128 bytes).
const FS_IOC_ENABLE_VERITY: u32 = 0x4080_6685;
/// `FS_IOC_MEASURE_VERITY`: `_IOWR('f', 134, struct fsverity_digest)` (4-byte header).
pub const FS_IOC_MEASURE_VERITY: u32 = 0xc004_6686;
const HASH_ALG_SHA256: u16 = 1;
const BLOCK_SIZE: u32 = 4096;

/// `struct fsverity_enable_arg` of `<linux/fsverity.h>`.
#[repr(C)]
struct EnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

/// `struct fsverity_digest` followed by room for a SHA-256 digest.
#[repr(C)]
struct MeasureArg {
    digest_algorithm: u16,
    digest_size: u16,
    digest: [u8; 32],
}

/// What a file's fs-verity state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    /// Verity is on; the kernel enforces this SHA-256 digest on every read.
    Sha256([u8; 32]),
    /// Verity is on, with a hash algorithm other than SHA-256.
    OtherAlgorithm,
    /// The file system supports fs-verity, but it is not enabled on this file.
    NotEnabled,
}

/// Turns fs-verity on for `file` (opened read-only, no writer anywhere) with SHA-256 and
/// 4 KiB blocks, as PuzzleFS digests are computed. Returns false if it was already on.
pub fn enable(file: &File) -> io::Result<bool> {
    let arg = EnableArg {
        version: 1,
        hash_algorithm: HASH_ALG_SHA256.into(),
        block_size: BLOCK_SIZE,
        salt_size: 0,
        salt_ptr: 0,
        sig_size: 0,
        reserved1: 0,
        sig_ptr: 0,
        reserved2: [0; 11],
    };
    // SAFETY: the fd is open for the call's duration, and `arg` is a fully initialised
    // `struct fsverity_enable_arg` (no salt, no signature: both pointers are null with size 0)
    // that the kernel only reads.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_ENABLE_VERITY as _, &arg) };
    if rc == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        e => Err(e),
    }
}

/// The fs-verity measurement of `file`. Errors are those of the ioctl: EOPNOTSUPP or ENOTTY
/// when the kernel or file system has no fs-verity.
pub fn measure(file: &File) -> io::Result<Measurement> {
    let mut arg = MeasureArg {
        digest_algorithm: 0,
        digest_size: 32,
        digest: [0; 32],
    };
    // SAFETY: the fd is open for the call's duration; `arg` tells the kernel it has room for
    // 32 digest bytes after the header, and it is exactly that large, so the kernel writes
    // within it (EOVERFLOW otherwise).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_MEASURE_VERITY as _, &mut arg) };
    if rc != 0 {
        return match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENODATA) => Ok(Measurement::NotEnabled),
            e if e.raw_os_error() == Some(libc::EOVERFLOW) => Ok(Measurement::OtherAlgorithm),
            e => Err(e),
        };
    }
    if arg.digest_algorithm != HASH_ALG_SHA256 || arg.digest_size != 32 {
        return Ok(Measurement::OtherAlgorithm);
    }
    Ok(Measurement::Sha256(arg.digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_encoding() {
        let iow = |nr: u32, size: usize| (1u32 << 30) | ((size as u32) << 16) | (0x66 << 8) | nr;
        assert_eq!(
            FS_IOC_ENABLE_VERITY,
            iow(133, std::mem::size_of::<EnableArg>())
        );
        assert_eq!(std::mem::size_of::<EnableArg>(), 128);
        // _IOWR encodes the 4-byte header only.
        assert_eq!(FS_IOC_MEASURE_VERITY, iow(134, 4) | (2 << 30));
    }

    /// On a file system without fs-verity (tmpfs, or a kernel without it) both calls fail
    /// with an error rather than claiming a measurement.
    #[test]
    fn unsupported_file_systems_give_an_error_or_not_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"data").unwrap();
        let file = File::open(&path).unwrap();
        match measure(&file) {
            Ok(m) => assert_eq!(m, Measurement::NotEnabled),
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)),
                "{e}"
            ),
        }
    }
}
