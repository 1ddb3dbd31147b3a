//! The API's data: what `GET /api/v1/daemon` answers (nydusd's `DaemonInfo`, field for
//! field) and what `POST /api/v1/mount` takes (nydusd's `ApiMountCmd`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The daemon's working state, serialized as nydusd does (`"INIT"`, `"RUNNING"`...). Kata
/// waits for `RUNNING` before its first mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DaemonState {
    /// Started, not serving yet.
    Init,
    /// Prepared, waiting to be started (nydusd's state between mount and start).
    Ready,
    /// Serving: the API takes mounts and the file system answers.
    Running,
    /// Shutting down or stopped.
    Stopped,
    /// Anything else.
    Unknown,
}

/// Build information, nydusd's `BuildTimeInfo`. Kata's clients require it as an object of
/// five strings: the Go runtime unmarshals `version` into such a struct (a string there
/// fails the whole readiness check) and runtime-rs requires every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The package version (`0.1.0`).
    pub package_ver: String,
    /// The commit it was built from, or `unknown`.
    pub git_commit: String,
    /// When it was built, or `unknown`.
    pub build_time: String,
    /// `release` or `debug`.
    pub profile: String,
    /// The compiler, or `unknown`.
    pub rustc: String,
}

impl BuildInfo {
    /// This crate's version and profile; the commit, time and compiler come from the
    /// build environment (`PUZZLEFS_GIT_COMMIT`, `PUZZLEFS_BUILD_TIME`, `PUZZLEFS_RUSTC`)
    /// when it sets them, else `unknown`.
    pub fn of_this_build() -> BuildInfo {
        BuildInfo {
            package_ver: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("PUZZLEFS_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            build_time: option_env!("PUZZLEFS_BUILD_TIME")
                .unwrap_or("unknown")
                .to_string(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            rustc: option_env!("PUZZLEFS_RUSTC")
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

/// One mounted file system, as `backend_collection` lists it (nydusd's
/// `FsBackendMountCmd` without `config`, which can hold registry credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// `passthrough_fs`, `rafs` (as Kata names a PuzzleFS image)...
    pub fs_type: String,
    /// What was mounted, as the request named it.
    pub source: String,
    /// Where.
    pub mountpoint: String,
}

/// What `GET /api/v1/daemon` answers, nydusd's `DaemonInfo`. Kata's Go runtime reads `id`
/// (string or null), `version` (an object, see [`BuildInfo`]) and `state`; runtime-rs
/// also takes `supervisor` and `backend_collection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Build and version information.
    pub version: BuildInfo,
    /// The daemon's identifier (nydusd's `--id`), if it has one.
    pub id: Option<String>,
    /// The supervisor socket (nydusd's `--supervisor`), if any.
    pub supervisor: Option<String>,
    /// The working state.
    pub state: DaemonState,
    /// Live mounts by mount point; `None` is serialized as `null`.
    pub backend_collection: Option<BTreeMap<String, BackendInfo>>,
}

impl DaemonInfo {
    /// A running daemon's information with no id, supervisor or mounts.
    pub fn running() -> DaemonInfo {
        DaemonInfo {
            version: BuildInfo::of_this_build(),
            id: None,
            supervisor: None,
            state: DaemonState::Running,
            backend_collection: None,
        }
    }
}

/// A mount request, the body of `POST /api/v1/mount?mountpoint=...` (nydusd's
/// `ApiMountCmd`). Kata sends `{"fs_type":"passthrough_fs","source":DIR,"config":""}` for its
/// shared directory and `{"fs_type":"rafs","source":...,"config":JSON_AS_A_STRING}` for each
/// image.
///
/// `source` is required; `fs_type` and `config` default to empty (nydusd requires `config`;
/// accepting its absence costs nothing). Unknown fields are accepted and ignored, as nydusd
/// (serde's default) does: clients built for newer nydusd send more (`prefetch_files`, a
/// hint); the one that changes meaning, `overlay`, is kept for the [`Control`] to refuse.
///
/// [`Control`]: super::Control
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// `passthrough_fs`, `rafs`...: what the [`Control`](super::Control) accepts is its call.
    #[serde(default)]
    pub fs_type: String,
    /// The directory, image or bootstrap to mount, as the client names it.
    pub source: String,
    /// File-system configuration: JSON carried as a string, possibly empty.
    #[serde(default)]
    pub config: String,
    /// A writable-overlay configuration, if any: a top-level `overlay` string appears in one
    /// version of Kata runtime-rs's client (nydusd itself reads `overlay` inside `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_serialized_as_nydusd_does() {
        for (s, j) in [
            (DaemonState::Init, "\"INIT\""),
            (DaemonState::Ready, "\"READY\""),
            (DaemonState::Running, "\"RUNNING\""),
            (DaemonState::Stopped, "\"STOPPED\""),
            (DaemonState::Unknown, "\"UNKNOWN\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), j);
        }
    }

    #[test]
    fn daemon_info_has_nydusd_shape() {
        let mut info = DaemonInfo::running();
        info.id = Some("sandbox-1".into());
        info.backend_collection = Some(BTreeMap::from([(
            "/containers".to_string(),
            BackendInfo {
                fs_type: "passthrough_fs".into(),
                source: "/run/kata/shared".into(),
                mountpoint: "/containers".into(),
            },
        )]));
        let v: serde_json::Value = serde_json::to_value(&info).unwrap();
        assert_eq!(v["id"], "sandbox-1");
        assert_eq!(v["state"], "RUNNING");
        assert!(v["supervisor"].is_null());
        let version = v["version"].as_object().unwrap();
        for k in [
            "package_ver",
            "git_commit",
            "build_time",
            "profile",
            "rustc",
        ] {
            assert!(version[k].is_string(), "{k}");
        }
        assert_eq!(version["package_ver"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            v["backend_collection"]["/containers"]["fs_type"],
            "passthrough_fs"
        );
        assert!(v["backend_collection"]["/containers"]
            .get("config")
            .is_none());
        let none = serde_json::to_value(DaemonInfo::running()).unwrap();
        assert!(none["id"].is_null() && none["backend_collection"].is_null());
    }

    #[test]
    fn mount_request_shapes() {
        let kata: MountRequest =
            serde_json::from_str(r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#)
                .unwrap();
        assert_eq!(kata.fs_type, "passthrough_fs");
        assert_eq!((kata.source.as_str(), kata.config.as_str()), ("/x", ""));
        assert_eq!(kata.overlay, None);

        let newer: MountRequest = serde_json::from_str(
            r#"{"source":"/b","config":"{}","prefetch_files":["/etc"],"overlay":"{\"upper\":1}"}"#,
        )
        .unwrap();
        assert_eq!(newer.fs_type, "");
        assert_eq!(newer.overlay.as_deref(), Some("{\"upper\":1}"));

        for bad in [
            r#"{"fs_type":"rafs","config":""}"#,
            r#"{"fs_type":"rafs","source":"/x","config":{"a":1}}"#,
            r#"{"fs_type":1,"source":"/x"}"#,
            r#"["/x"]"#,
            "",
        ] {
            assert!(serde_json::from_str::<MountRequest>(bad).is_err(), "{bad}");
        }
    }
}
