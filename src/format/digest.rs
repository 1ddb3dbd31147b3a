//! SHA-256 digests, the names of every blob.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

use super::FormatError;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Lowercase hex, 64 characters.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The OCI form, `sha256:<hex>`.
    pub fn oci(&self) -> String {
        format!("sha256:{}", self.hex())
    }

    /// Parses 32 raw bytes, as stored in metadata.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, FormatError> {
        bytes
            .try_into()
            .map(Digest)
            .map_err(|_| FormatError::Invalid(format!("digest of {} bytes", bytes.len())))
    }

    /// Parses bare hex or `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        let mut out = [0u8; 32];
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(FormatError::BadDigest(s.to_string()));
        }
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| FormatError::BadDigest(s.to_string()))?;
        Ok(Digest(out))
    }
}

impl FromStr for Digest {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.oci())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.hex())
    }
}

/// An `io::Write` sink that hashes what passes through it.
#[derive(Default)]
pub struct Sha256Writer(Sha256);

impl Sha256Writer {
    /// The digest of everything written so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl std::io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_rejects_junk() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.hex()).unwrap(), d);
        assert_eq!(Digest::parse(&d.oci()).unwrap(), d);
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&d.hex().to_uppercase()).is_err());
        assert!(Digest::parse(&format!("sha512:{}", d.hex())).is_err());
        assert!(Digest::parse(&"g".repeat(64)).is_err());
    }
}
