//! What a generation inherits from its respawner: descriptors it finds open, the image to
//! open again (or, for a mount table, the control channel the table comes back through) and
//! the guest's INIT request, in one environment variable (JSON).

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use crate::daemon::DaemonError;
use crate::format::Digest;

/// The environment variable a respawner sets for its generations.
pub(crate) const RESUME_ENV: &str = "PUZZLEFS_VIRTIOFSD_RESUME";

/// A generation's inheritance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resume {
    /// 1 for the first serving process, then one more for each restart.
    pub generation: u32,
    /// The listening vhost-user socket.
    pub listener: RawFd,
    /// The generation's end of the note channel.
    pub notes: RawFd,
    /// Serving an image: the manifest the first generation served. The image is opened by
    /// it, never by the tag again (a moved tag must not change the files behind the guest's
    /// node ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Serving a mount table: the generation's end of the control channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<RawFd>,
    /// The guest's INIT request (hex), once one generation got it.
    pub init: Option<String>,
}

impl Resume {
    /// The inheritance this process was started with, if it is a generation.
    pub(crate) fn from_env() -> Result<Option<Resume>, DaemonError> {
        let Some(text) = std::env::var_os(RESUME_ENV) else {
            return Ok(None);
        };
        let text = text.to_str().ok_or_else(|| bad("not UTF-8"))?;
        let resume: Resume = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if resume.manifest.is_some() == resume.control.is_some() {
            return Err(bad(
                "one of an image's manifest or a table's control channel",
            ));
        }
        if resume.manifest.is_some() {
            resume.manifest()?;
        }
        resume.init()?;
        Ok(Some(resume))
    }

    /// The value of [`RESUME_ENV`] for this inheritance.
    pub(crate) fn to_env(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The manifest to serve (an image).
    pub(crate) fn manifest(&self) -> Result<Digest, DaemonError> {
        let manifest = self.manifest.as_deref().ok_or_else(|| bad("no manifest"))?;
        Digest::parse(manifest).map_err(|e| bad(&format!("manifest: {e}")))
    }

    /// The INIT request to replay.
    pub(crate) fn init(&self) -> Result<Option<Vec<u8>>, DaemonError> {
        self.init
            .as_deref()
            .map(|text| hex::decode(text).map_err(|_| bad("init is not hex")))
            .transpose()
    }

    /// Encodes an INIT request for [`Resume::init`].
    pub(crate) fn hex(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }
}

fn bad(why: &str) -> DaemonError {
    DaemonError::Usage(format!("{RESUME_ENV}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inheritance_round_trips_and_bad_fields_are_refused() {
        let r = Resume {
            generation: 3,
            listener: 3,
            notes: 5,
            manifest: Some(format!("sha256:{}", "ab".repeat(32))),
            control: None,
            init: Some(Resume::hex(&[0, 1, 0xfe, 0xff])),
        };
        let back: Resume = serde_json::from_str(&r.to_env()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.init().unwrap(), Some(vec![0, 1, 0xfe, 0xff]));
        assert!(back.manifest().is_ok());
        for init in ["0", "zz", "é0"] {
            let r = Resume {
                init: Some(init.into()),
                ..back.clone()
            };
            assert!(r.init().is_err(), "{init}");
        }
        let r = Resume {
            manifest: Some("sha256:12".into()),
            ..back.clone()
        };
        assert!(r.manifest().is_err());
        let table = Resume {
            manifest: None,
            control: Some(7),
            ..back
        };
        let back: Resume = serde_json::from_str(&table.to_env()).unwrap();
        assert_eq!(back, table);
        assert!(back.manifest().is_err(), "a table has no manifest");
    }
}
