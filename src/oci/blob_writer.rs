//! A blob arriving in pieces (from a registry, another layout): written to an unnamed file
//! beside the blobs, hashed as it comes, and named only once its digest and size check out.

use std::io::{Seek, Write};

use super::temp_blob::TempBlob;
use super::{OciDir, OciError};
use crate::format::{Digest, Sha256Writer};

/// A blob being received; dropping it without [`BlobWriter::commit`] leaves nothing behind.
pub struct BlobWriter {
    tmp: TempBlob,
    hash: Sha256Writer,
    len: u64,
    digest: Digest,
    oci: OciDir,
}

impl OciDir {
    /// Starts receiving the blob `digest`.
    pub fn blob_writer(&self, digest: &Digest) -> Result<BlobWriter, OciError> {
        let blobs = self.blobs_dir();
        let tmp = TempBlob::new_in(&blobs).map_err(|e| OciError::io(&blobs, e))?;
        Ok(BlobWriter {
            tmp,
            hash: Sha256Writer::default(),
            len: 0,
            digest: *digest,
            oci: self.clone(),
        })
    }
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), OciError> {
        if let Err(e) = self.tmp.file().write_all(data) {
            return Err(OciError::io(self.tmp.path(), e));
        }
        self.hash
            .write_all(data)
            .map_err(|e| OciError::io(self.tmp.path(), e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets what was received, to start over.
    pub fn reset(&mut self) -> Result<(), OciError> {
        let path = self.tmp.path();
        let file = self.tmp.file();
        file.set_len(0)
            .and_then(|_| file.rewind())
            .map_err(|e| OciError::io(path, e))?;
        self.hash = Sha256Writer::default();
        self.len = 0;
        Ok(())
    }

    /// Names the blob if what was received hashes to its digest, and returns its size;
    /// otherwise removes it.
    pub fn commit(self) -> Result<u64, OciError> {
        let actual = self.hash.finish();
        if actual != self.digest {
            return Err(OciError::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        let dest = self.oci.blob_path(&self.digest);
        self.tmp
            .persist(&dest)
            .map_err(|e| OciError::io(&dest, e))?;
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bytes_get_a_name() {
        let tmp = tempfile::tempdir().unwrap();
        let oci = OciDir::create(tmp.path()).unwrap();
        let d = Digest::of(b"hello world");
        let mut w = oci.blob_writer(&d).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"there").unwrap();
        assert_eq!(w.len(), 11);
        assert!(matches!(w.commit(), Err(OciError::DigestMismatch { .. })));
        assert!(!oci.has_blob(&d));
        let mut w = oci.blob_writer(&d).unwrap();
        w.write(b"junk").unwrap();
        w.reset().unwrap();
        w.write(b"hello world").unwrap();
        assert_eq!(w.commit().unwrap(), 11);
        assert_eq!(oci.read_blob(&d, 100).unwrap(), b"hello world");
        // Nothing else is left in the blobs directory.
        let names: Vec<_> = std::fs::read_dir(oci.blobs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(d.hex())]);
    }
}
