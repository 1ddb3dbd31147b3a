//! Where this user pushed before: per registry, the repositories most recently pushed to,
//! kept in `$XDG_CACHE_HOME/puzzlefs/pushed-repositories.json` (`~/.cache/...`). A push
//! tries to mount each missing blob from the latest other one: a registry that has the blob
//! there links it instead of receiving it, and one that has not answers with the upload
//! session the blob then goes through, so a miss costs no extra request. Only a hint: an
//! unreadable or unwritable file is ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Repositories kept per registry.
const KEEP: usize = 16;

/// The history file, if there is a cache directory.
fn path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("puzzlefs/pushed-repositories.json"))
}

fn load() -> BTreeMap<String, Vec<String>> {
    path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The repository of `registry`, other than `repo`, pushed to most recently.
pub(super) fn latest_other(registry: &str, repo: &str) -> Option<String> {
    load().remove(registry)?.into_iter().find(|r| r != repo)
}

/// Records a push to `repo` of `registry`.
pub(super) fn record(registry: &str, repo: &str) {
    let Some(path) = path() else { return };
    let mut all = load();
    let repos = all.entry(registry.to_string()).or_default();
    repos.retain(|r| r != repo);
    repos.insert(0, repo.to_string());
    repos.truncate(KEEP);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, &serde_json::to_vec(&all)?)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        log::debug!("{}: {e}", path.display());
    }
}
