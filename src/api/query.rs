//! The `mountpoint` query parameter: found in the raw query, percent-decoded, validated and
//! put in one canonical form before any [`Control`](super::Control) sees it.
//!
//! Kata does not URL-encode the query (`?mountpoint=/rafs/<cid>/lowerdir`), other clients
//! do (`?mountpoint=%2Frafs%2F...`): both are accepted. `+` is a plus sign, not a space
//! (RFC 3986 queries, not HTML forms; nydusd's decoder would turn it into a space, but Kata's
//! own container-id check allows `+` and the guest looks the literal name up). A malformed
//! `%` escape is refused rather than guessed at.

use super::ApiError;

/// The longest mount point accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_MOUNTPOINT_LEN: usize = 4096;

/// The longest component of a mount point, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// The value of `mountpoint` in `query` (the part after `?`), validated and canonical
/// (no trailing slash but for `/` itself).
pub fn mountpoint(query: Option<&str>) -> Result<String, ApiError> {
    let missing =
        || ApiError::BadRequest("'mountpoint' should be specified in query string".into());
    let raw = param(query.ok_or_else(missing)?, "mountpoint")?.ok_or_else(missing)?;
    validate(&raw)
}

/// The decoded value of `key` in `query`, if present once; present twice is an error (which
/// one was meant?).
fn param(query: &str, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k)? != key.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::BadRequest(format!(
                "'{key}' is given more than once in the query string"
            )));
        }
        found = Some(percent_decode(v)?);
    }
    Ok(found)
}

/// `%XX` to the byte it names; anything else as is.
fn percent_decode(s: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                // from_str_radix takes a leading '+': refuse "%+1".
                Some(b) if bytes[i + 1].is_ascii_hexdigit() => out.push(b),
                _ => {
                    return Err(ApiError::BadRequest(
                        "malformed percent-encoding in the query string".into(),
                    ))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Checks a decoded mount point: UTF-8, absolute, at most [`MAX_MOUNTPOINT_LEN`] bytes, no
/// control characters (NUL included), no `.` or `..` components, no empty component but a
/// trailing slash, components of at most [`MAX_COMPONENT_LEN`] bytes. Returns it without
/// its trailing slash.
pub fn validate(raw: &[u8]) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("invalid mountpoint: {why}"));
    if raw.len() > MAX_MOUNTPOINT_LEN {
        return Err(bad(&format!("longer than {MAX_MOUNTPOINT_LEN} bytes")));
    }
    let s = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(bad(&format!("{s:?} is not an absolute path")));
    };
    if rest.is_empty() {
        return Ok("/".to_string());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for component in rest.split('/') {
        match component {
            "" => return Err(bad(&format!("{s:?} has an empty component"))),
            "." | ".." => return Err(bad(&format!("{s:?} has a {component:?} component"))),
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(bad(&format!(
                    "a component is longer than {MAX_COMPONENT_LEN} bytes"
                )))
            }
            _ => {}
        }
    }
    Ok(format!("/{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(q: &str) -> Result<String, ApiError> {
        mountpoint(Some(q))
    }

    #[test]
    fn raw_and_encoded_queries() {
        assert_eq!(mp("mountpoint=/containers").unwrap(), "/containers");
        assert_eq!(
            mp("mountpoint=/rafs/abc_1-2.3+4/lowerdir").unwrap(),
            "/rafs/abc_1-2.3+4/lowerdir",
            "Kata's raw query; + stays a plus"
        );
        assert_eq!(
            mp("mountpoint=%2Frafs%2Fc1%2flowerdir").unwrap(),
            "/rafs/c1/lowerdir"
        );
        assert_eq!(mp("x=1&mountpoint=/a&y").unwrap(), "/a");
        assert_eq!(mp("%6dountpoint=/a").unwrap(), "/a", "encoded key");
        assert_eq!(mp("mountpoint=/a=b").unwrap(), "/a=b");
        assert_eq!(mp("mountpoint=/a%20b").unwrap(), "/a b");
        assert_eq!(mp("mountpoint=/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn canonical_form() {
        assert_eq!(mp("mountpoint=/").unwrap(), "/");
        assert_eq!(mp("mountpoint=/a/").unwrap(), "/a");
        assert_eq!(mp("mountpoint=/a/b/").unwrap(), "/a/b");
    }

    #[test]
    fn missing_or_ambiguous() {
        assert!(matches!(mountpoint(None), Err(ApiError::BadRequest(_))));
        for q in ["", "mountpoin=/a", "mountpoint", "mountpoint=", "a=b&c"] {
            assert!(matches!(mp(q), Err(ApiError::BadRequest(_))), "{q:?}");
        }
        let e = mp("mountpoint=/a&mountpoint=/b").unwrap_err();
        assert!(e.message().contains("more than once"), "{e}");
        assert!(mp("").unwrap_err().message().contains("'mountpoint'"));
    }

    #[test]
    fn refused_mountpoints() {
        let long = format!("mountpoint=/{}", "a".repeat(MAX_MOUNTPOINT_LEN));
        let long_component = format!("mountpoint=/{}", "a".repeat(MAX_COMPONENT_LEN + 1));
        let ok_component = format!("mountpoint=/{}", "a".repeat(MAX_COMPONENT_LEN));
        assert!(mp(&ok_component).is_ok());
        for q in [
            "mountpoint=containers",
            "mountpoint=rafs/c1/lowerdir",
            "mountpoint=/rafs/../etc",
            "mountpoint=/rafs/..",
            "mountpoint=/..",
            "mountpoint=/./a",
            "mountpoint=/a/.",
            "mountpoint=/a/./",
            "mountpoint=%2F..%2Fx",
            "mountpoint=/%2e%2e/x",
            "mountpoint=//",
            "mountpoint=//a",
            "mountpoint=/a//b",
            "mountpoint=/a%00b",
            "mountpoint=/a%0Ab",
            "mountpoint=/a%7F",
            "mountpoint=/a%FFb",
            "mountpoint=/a%C3",
            "mountpoint=/a%",
            "mountpoint=/a%4",
            "mountpoint=/a%zz",
            "mountpoint=/a%+1",
            long.as_str(),
            long_component.as_str(),
        ] {
            let e = mp(q).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{q:?}: {e:?}");
        }
    }

    #[test]
    fn validate_alone() {
        assert_eq!(validate(b"/rafs/c1/lowerdir").unwrap(), "/rafs/c1/lowerdir");
        assert!(validate(b"").is_err());
        assert!(validate(b"/a\0").is_err());
        assert!(validate(&[b'/', 0xff]).is_err());
        // Exactly at the limit is fine.
        let mut at_limit = Vec::new();
        while at_limit.len() + 101 <= MAX_MOUNTPOINT_LEN {
            at_limit.push(b'/');
            at_limit.extend_from_slice(&[b'x'; 100]);
        }
        while at_limit.len() < MAX_MOUNTPOINT_LEN {
            at_limit.push(b'y');
        }
        assert_eq!(at_limit.len(), MAX_MOUNTPOINT_LEN);
        assert!(validate(&at_limit).is_ok());
    }
}
