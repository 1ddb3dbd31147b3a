//! JSON documents of the OCI image spec, as PuzzleFS uses them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::OciError;
use crate::format::Digest;

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of the empty JSON config `{}`.
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Media type of the PuzzleFS metadata layer.
pub const MEDIA_TYPE_ROOTFS: &str = "application/vnd.puzzlefs.image.rootfs.v1";
/// Media type of PuzzleFS data chunks (`+zstd` appended when compressed).
pub const MEDIA_TYPE_FILEDATA: &str = "application/vnd.puzzlefs.image.filedata.v1";
/// Index annotation holding a manifest's tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Rootfs descriptor annotation holding the metadata blob's fs-verity digest (hex).
pub const ANNOTATION_VERITY_ROOT: &str = "io.puzzlefsoci.puzzlefs.puzzlefs_verity_root_hash";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    #[serde(serialize_with = "ser_digest", deserialize_with = "de_digest")]
    pub digest: Digest,
    /// Size of the referenced content in bytes.
    pub size: u64,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Embedded content, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Platform of an image manifest, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Every other field (`urls`, `artifactType`, ...), kept as written so that rewriting a
    /// document another tool made loses nothing.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The fields of a JSON object this program does not interpret, kept verbatim.
pub type Extra = BTreeMap<String, serde_json::Value>;

impl Descriptor {
    /// A descriptor with only the three required fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            annotations: None,
            data: None,
            platform: None,
            extra: Extra::new(),
        }
    }

    /// The fs-verity digest recorded in the descriptor's annotation (PuzzleFS metadata
    /// layers carry one), if present and well formed.
    pub fn fs_verity(&self) -> Option<[u8; 32]> {
        let text = self.annotations.as_ref()?.get(ANNOTATION_VERITY_ROOT)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(out)
    }
}

/// Platform of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in GOARCH terms.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Every other field (`variant`, `os.version`, `os.features`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Platform {
    /// The platform this program runs on.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            extra: Extra::new(),
        }
    }
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// [`MEDIA_TYPE_INDEX`] when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests, tagged through [`ANNOTATION_REF_NAME`].
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Every other field (`artifactType`, `subject`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for ImageIndex {
    fn default() -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.into()),
            manifests: Vec::new(),
            annotations: None,
            extra: Extra::new(),
        }
    }
}

impl ImageIndex {
    /// The tag of a manifest descriptor, if it has one.
    pub fn tag_of(desc: &Descriptor) -> Option<&str> {
        desc.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .map(String::as_str)
    }

    /// The descriptor tagged `tag`.
    pub fn find(&self, tag: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| Self::tag_of(d) == Some(tag))
    }

    /// All tags, in index order.
    pub fn tags(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| Self::tag_of(d).map(String::from))
            .collect()
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MEDIA_TYPE_MANIFEST`] when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The empty config for PuzzleFS images.
    pub config: Descriptor,
    /// The metadata layer first, then data chunks.
    pub layers: Vec<Descriptor>,
    /// Arbitrary metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Every other field (`artifactType`, `subject`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ImageManifest {
    /// Parses a manifest keeping, of its layers, only the PuzzleFS metadata ones: for readers
    /// that never look at the data layers' descriptors (the metadata names every chunk it
    /// uses). A manifest lists one descriptor per chunk, thousands of them, so this skips
    /// most of the parsing and all of the allocation a full read costs; each data layer must
    /// still be an object with a string `mediaType`.
    pub fn parse_metadata_layers(bytes: &[u8]) -> serde_json::Result<ImageManifest> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Lean<'a> {
            schema_version: u32,
            #[serde(default)]
            media_type: Option<String>,
            config: Descriptor,
            #[serde(borrow)]
            layers: Vec<&'a serde_json::value::RawValue>,
            #[serde(default)]
            annotations: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize)]
        struct MediaType<'a> {
            #[serde(rename = "mediaType", borrow)]
            media_type: std::borrow::Cow<'a, str>,
        }
        let lean: Lean<'_> = serde_json::from_slice(bytes)?;
        let mut layers = Vec::new();
        for raw in lean.layers {
            let probe: MediaType<'_> = serde_json::from_str(raw.get())?;
            if probe.media_type == MEDIA_TYPE_ROOTFS {
                layers.push(serde_json::from_str(raw.get())?);
            }
        }
        Ok(ImageManifest {
            schema_version: lean.schema_version,
            media_type: lean.media_type,
            config: lean.config,
            layers,
            annotations: lean.annotations,
            extra: Extra::new(),
        })
    }

    /// The metadata layer's descriptor.
    pub fn rootfs(&self) -> Option<&Descriptor> {
        self.layers
            .iter()
            .find(|d| d.media_type == MEDIA_TYPE_ROOTFS)
    }
}

/// The OCI empty descriptor (`{}`), with its bytes.
pub fn empty_config() -> (Descriptor, &'static [u8]) {
    let bytes: &'static [u8] = b"{}";
    (
        Descriptor {
            data: Some("e30=".into()),
            ..Descriptor::new(MEDIA_TYPE_EMPTY, Digest::of(bytes), 2)
        },
        bytes,
    )
}

/// Checks a tag against the OCI reference grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), OciError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(OciError::BadTag(tag.into()))
    }
}

fn ser_digest<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.oci())
}

fn de_digest<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
    let s = String::deserialize(d)?;
    if !s.starts_with("sha256:") {
        return Err(serde::de::Error::custom(format!(
            "unsupported digest {s:?}"
        )));
    }
    Digest::parse(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_reference_grammar() {
        for ok in ["latest", "v1.2-rc_3", "_x", &"a".repeat(128)] {
            validate_tag(ok).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", &"a".repeat(129), "é"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptor_json_round_trip_and_rejects_other_algorithms() {
        let (d, _) = empty_config();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="}"#
        );
        assert_eq!(serde_json::from_str::<Descriptor>(&json).unwrap(), d);
        let bad = json.replace("sha256:", "sha512:");
        assert!(serde_json::from_str::<Descriptor>(&bad).is_err());
    }

    #[test]
    fn metadata_layers_parse_keeps_what_a_full_parse_keeps_of_them() {
        let (config, _) = empty_config();
        let layer = |media_type: &str, byte: u8| Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(&[byte]),
            size: 1,
            ..config.clone()
        };
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.into()),
            config: config.clone(),
            layers: vec![
                layer(MEDIA_TYPE_FILEDATA, 1),
                layer(MEDIA_TYPE_ROOTFS, 2),
                layer(MEDIA_TYPE_FILEDATA, 3),
            ],
            annotations: Some(BTreeMap::from([("k".into(), "v".into())])),
            extra: Extra::new(),
        };
        let json = serde_json::to_vec(&manifest).unwrap();
        let lean = ImageManifest::parse_metadata_layers(&json).unwrap();
        assert_eq!(lean.layers, vec![manifest.layers[1].clone()]);
        assert_eq!(
            ImageManifest {
                layers: manifest.layers[1..2].to_vec(),
                ..manifest.clone()
            },
            lean
        );
        // A data layer must still be an object with a media type; the metadata layer is
        // checked in full.
        let text = String::from_utf8(json).unwrap();
        for bad in [
            text.replacen(
                r#"{"mediaType":"application/vnd.puzzlefs.image.filedata.v1","#,
                "{\"x\":1,",
                1,
            ),
            text.replacen(
                "rootfs.v1\",\"digest\":\"sha256:",
                "rootfs.v1\",\"digest\":\"sha512:",
                1,
            ),
            text.replacen(r#""layers":["#, r#""layers":[7,"#, 1),
        ] {
            assert_ne!(bad, text);
            assert!(
                ImageManifest::parse_metadata_layers(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }
}
