//! `lseek` on an image file, which has no holes: everything before the end is data.

use super::errno::OpError;

/// The new offset for `lseek(offset, whence)` on a file of `size` bytes. No file position is
/// kept per handle (the kernel only forwards `SEEK_DATA` and `SEEK_HOLE`), so `SEEK_CUR` is
/// taken relative to the start.
pub(crate) fn seek(size: u64, offset: u64, whence: u32) -> Result<u64, OpError> {
    // The kernel passes a signed offset in an unsigned field.
    let off = offset as i64;
    let size = i64::try_from(size).map_err(|_| OpError::Invalid)?;
    let pos = match whence as i32 {
        libc::SEEK_SET | libc::SEEK_CUR => off,
        libc::SEEK_END => size.checked_add(off).ok_or(OpError::Invalid)?,
        libc::SEEK_DATA | libc::SEEK_HOLE => {
            if off < 0 {
                return Err(OpError::Invalid);
            }
            if off >= size {
                return Err(OpError::PastEnd);
            }
            if whence as i32 == libc::SEEK_DATA {
                off
            } else {
                size
            }
        }
        _ => return Err(OpError::Invalid),
    };
    u64::try_from(pos).map_err(|_| OpError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(size: u64, off: i64, whence: i32) -> Result<u64, i32> {
        seek(size, off as u64, whence as u32).map_err(|e| e.errno())
    }

    #[test]
    fn whole_file_is_data() {
        assert_eq!(at(100, 10, libc::SEEK_SET), Ok(10));
        assert_eq!(at(100, 500, libc::SEEK_SET), Ok(500));
        assert_eq!(at(100, 7, libc::SEEK_CUR), Ok(7));
        assert_eq!(at(100, -1, libc::SEEK_END), Ok(99));
        assert_eq!(at(100, 5, libc::SEEK_END), Ok(105));
        assert_eq!(at(100, -101, libc::SEEK_END), Err(libc::EINVAL));
        assert_eq!(at(100, -1, libc::SEEK_SET), Err(libc::EINVAL));
        assert_eq!(at(100, 0, libc::SEEK_DATA), Ok(0));
        assert_eq!(at(100, 99, libc::SEEK_DATA), Ok(99));
        assert_eq!(at(100, 100, libc::SEEK_DATA), Err(libc::ENXIO));
        assert_eq!(at(100, 0, libc::SEEK_HOLE), Ok(100));
        assert_eq!(at(100, 50, libc::SEEK_HOLE), Ok(100));
        assert_eq!(at(100, 100, libc::SEEK_HOLE), Err(libc::ENXIO));
        assert_eq!(at(0, 0, libc::SEEK_DATA), Err(libc::ENXIO));
        assert_eq!(at(100, -3, libc::SEEK_DATA), Err(libc::EINVAL));
        assert_eq!(at(100, 0, 99), Err(libc::EINVAL));
        assert_eq!(at(100, i64::MAX, libc::SEEK_END), Err(libc::EINVAL));
    }
}
