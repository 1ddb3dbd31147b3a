//! Extended attribute replies, with the size-query and `ERANGE` rules of `getxattr(2)`.

use fuse_backend_rs::api::filesystem::{GetxattrReply, ListxattrReply};

use super::errno::OpError;
use crate::format::Xattr;

/// `getxattr`: the value's length when `size` is 0, the value when it fits, `ERANGE` when
/// it does not, `ENODATA` when the node has no such attribute.
pub(crate) fn get(xattrs: &[Xattr], name: &[u8], size: u32) -> Result<GetxattrReply, OpError> {
    let x = xattrs
        .iter()
        .find(|x| x.key == name)
        .ok_or(OpError::NoXattr)?;
    let len = u32::try_from(x.value.len()).map_err(|_| OpError::BufferTooSmall)?;
    if size == 0 {
        Ok(GetxattrReply::Count(len))
    } else if len > size {
        Err(OpError::BufferTooSmall)
    } else {
        Ok(GetxattrReply::Value(x.value.clone()))
    }
}

/// `listxattr`: names, each followed by a NUL, under the same size rules.
pub(crate) fn list(xattrs: &[Xattr], size: u32) -> Result<ListxattrReply, OpError> {
    let total: usize = xattrs.iter().map(|x| x.key.len() + 1).sum();
    let total = u32::try_from(total).map_err(|_| OpError::BufferTooSmall)?;
    if size == 0 {
        return Ok(ListxattrReply::Count(total));
    }
    if total > size {
        return Err(OpError::BufferTooSmall);
    }
    let mut names = Vec::with_capacity(total as usize);
    for x in xattrs {
        names.extend_from_slice(&x.key);
        names.push(0);
    }
    Ok(ListxattrReply::Names(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Vec<Xattr> {
        vec![
            Xattr {
                key: b"user.a".to_vec(),
                value: b"hello".to_vec(),
            },
            Xattr {
                key: b"trusted.empty".to_vec(),
                value: Vec::new(),
            },
        ]
    }

    fn errno<T>(r: Result<T, OpError>) -> i32 {
        r.err().map_or(0, |e| e.errno())
    }

    #[test]
    fn getxattr_size_rules() {
        let xs = attrs();
        assert!(matches!(
            get(&xs, b"user.a", 0),
            Ok(GetxattrReply::Count(5))
        ));
        assert_eq!(errno(get(&xs, b"user.a", 4)), libc::ERANGE);
        match get(&xs, b"user.a", 5) {
            Ok(GetxattrReply::Value(v)) => assert_eq!(v, b"hello"),
            _ => panic!("value expected"),
        }
        assert!(matches!(
            get(&xs, b"user.a", 100),
            Ok(GetxattrReply::Value(_))
        ));
        assert!(matches!(
            get(&xs, b"trusted.empty", 0),
            Ok(GetxattrReply::Count(0))
        ));
        assert!(matches!(
            get(&xs, b"trusted.empty", 1),
            Ok(GetxattrReply::Value(v)) if v.is_empty()
        ));
        assert_eq!(errno(get(&xs, b"user.missing", 0)), libc::ENODATA);
        assert_eq!(errno(get(&xs, b"user", 100)), libc::ENODATA);
    }

    #[test]
    fn listxattr_size_rules() {
        let xs = attrs();
        let want = b"user.a\0trusted.empty\0";
        assert!(matches!(list(&xs, 0), Ok(ListxattrReply::Count(n)) if n as usize == want.len()));
        assert_eq!(errno(list(&xs, want.len() as u32 - 1)), libc::ERANGE);
        match list(&xs, want.len() as u32) {
            Ok(ListxattrReply::Names(v)) => assert_eq!(v, want),
            _ => panic!("names expected"),
        }
        assert!(matches!(list(&[], 0), Ok(ListxattrReply::Count(0))));
        assert!(matches!(list(&[], 10), Ok(ListxattrReply::Names(v)) if v.is_empty()));
    }
}
