//! OCI image layout: `oci-layout`, `index.json` tags, image manifests, blobs by digest.

mod blob_writer;
mod dir;
mod error;
mod kernel_verity;
mod staging;
mod temp_blob;
mod types;

pub use blob_writer::BlobWriter;
pub use dir::{OciDir, MAX_MANIFEST_BYTES};
pub use error::{OciError, VerityProblem};
pub use kernel_verity::FS_IOC_MEASURE_VERITY;
pub use staging::Staging;
pub use types::{
    empty_config, validate_tag, Descriptor, Extra, ImageIndex, ImageManifest, Platform,
    ANNOTATION_REF_NAME, ANNOTATION_VERITY_ROOT, MEDIA_TYPE_EMPTY, MEDIA_TYPE_FILEDATA,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_ROOTFS,
};
