//! Recreating an image's tree in a directory, safely against hostile images.

use std::path::Path;

use crate::reader::{Image, ReaderError};

/// Extraction settings.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {}

/// What an extraction did.
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {}

impl ExtractReport {
    /// One line for humans.
    pub fn summary(&self) -> String {
        String::new()
    }
}

/// Extracts `image` into `dest`.
pub fn extract(
    _image: &Image,
    _dest: &Path,
    _opts: &ExtractOptions,
) -> Result<ExtractReport, ReaderError> {
    Err(ReaderError::BadMetadata(
        "extract: not implemented yet".into(),
    ))
}
