//! What a restarted daemon would need to replay, and how the daemon ends: the supervisor's
//! `backend_collection` is exactly the mounts made (as the requests named them, refused ones
//! left out, unmounted ones gone); the daemon's exit, by SIGTERM to the process Kata started
//! or by the VMM disconnecting, removes both its socket files. With and without the sandbox.

use std::collections::BTreeMap;

use virtiofs_frontend::{Guest, RunOptions};

use super::{fixtures, TableDaemon};
use crate::harness::DAEMON_DEADLINE;

/// Mounts, refusals and unmounts, as Kata makes them over a sandbox's life; returns what
/// must be mounted after them.
fn kata_like_history(d: &TableDaemon, share: &str) -> BTreeMap<String, (String, String)> {
    let fx = fixtures();
    let by_digest = format!("{}@{}", fx.oci.display(), fx.sets[1].zstd.digest);
    let pin = format!(r#"{{"digest":"{}"}}"#, fx.sets[2].plain.digest);
    d.must_mount("/containers", "passthrough_fs", share, "");
    d.must_mount("/rafs/c1/lowerdir", "rafs", &fx.sets[0].plain.target, "");
    d.must_mount("/rafs/c2/lowerdir", "puzzlefs", &by_digest, "");
    let missing = format!("{}:no-such-tag", fx.oci.display());
    assert_eq!(
        d.mount("/rafs/c3/lowerdir", "rafs", &missing, "").status,
        400
    );
    d.must_mount("/rafs/c4/lowerdir", "rafs", &fx.sets[2].plain.target, &pin);
    d.must_umount("/rafs/c1/lowerdir");
    // The same mount point again, with another image.
    d.must_mount("/rafs/c1/lowerdir", "rafs", &fx.sets[3].zstd.target, "");
    d.must_umount("/rafs/c4/lowerdir");
    assert_eq!(
        d.mount("/rafs/c2/lowerdir", "rafs", &by_digest, "").status,
        409
    );
    assert_eq!(api_umount_status(d, "/rafs/c4/lowerdir"), 404);
    [
        ("/containers", "passthrough_fs", share.to_string()),
        ("/rafs/c1/lowerdir", "rafs", fx.sets[3].zstd.target.clone()),
        ("/rafs/c2/lowerdir", "puzzlefs", by_digest),
    ]
    .into_iter()
    .map(|(at, t, s)| (at.to_string(), (t.to_string(), s)))
    .collect()
}

fn api_umount_status(d: &TableDaemon, at: &str) -> u16 {
    crate::harness::api::umount(&d.api, at).status
}

/// How the daemon is told to end.
#[derive(Debug, Clone, Copy)]
enum End {
    /// SIGTERM to the process Kata started (the supervisor, under the sandbox).
    Sigterm,
    /// The VMM connects, then goes away.
    Disconnect,
    /// SIGTERM while the VMM is connected (Kata stops the daemon before the VM is gone).
    SigtermConnected,
}

fn sigterm(daemon: &crate::harness::daemon::Daemon) {
    // SAFETY: kill only sends a signal to the daemon process this test started.
    let rc = unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

fn history_then_end(sandbox: &[&str], end: End) {
    let share = tempfile::tempdir().unwrap();
    let share_path = share.path().to_str().unwrap();
    let mut args = vec!["--id", "sandbox-7"];
    args.extend_from_slice(sandbox);
    let d = TableDaemon::start(&args);
    let want = kata_like_history(&d, share_path);
    assert_eq!(d.backends(), want, "{sandbox:?}");
    let info = d.info();
    assert_eq!(info["id"], "sandbox-7");
    let live: Vec<String> = d.metrics()["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountpoint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        live,
        want.keys().cloned().collect::<Vec<_>>(),
        "the serving process has what the supervisor lists"
    );
    assert!(d.api.exists() && d.sock.exists());

    let TableDaemon {
        mut daemon,
        api,
        sock,
        _dir,
    } = d;
    let mut guest = None;
    match end {
        End::Sigterm => sigterm(&daemon),
        End::Disconnect | End::SigtermConnected => {
            let mut g = Guest::connect(&RunOptions::new(&sock)).unwrap();
            let names = g.list(1).unwrap().unwrap();
            assert_eq!(names, ["containers", "rafs"], "{end:?}");
            let rafs = g.lookup(1, "rafs").unwrap().unwrap().nodeid;
            assert_eq!(g.list(rafs).unwrap().unwrap(), ["c1", "c2", "c4"]);
            if matches!(end, End::Disconnect) {
                g.stop().unwrap();
            } else {
                sigterm(&daemon);
                guest = Some(g);
            }
        }
    }
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    drop(guest);
    assert!(status.success(), "{sandbox:?} {end:?}: {status}");
    assert!(!api.exists(), "{sandbox:?} {end:?}: the API socket is left");
    assert!(
        !sock.exists(),
        "{sandbox:?} {end:?}: the vhost-user socket is left"
    );
}

#[test]
fn backend_collection_is_the_mounts_made_and_sigterm_removes_the_sockets() {
    history_then_end(&[], End::Sigterm);
    history_then_end(&["--sandbox", "none"], End::Sigterm);
}

#[test]
fn sigterm_with_the_vmm_connected_removes_the_sockets() {
    history_then_end(&[], End::SigtermConnected);
    history_then_end(&["--sandbox", "none"], End::SigtermConnected);
}

#[test]
fn the_vmm_disconnecting_ends_the_daemon_and_removes_the_sockets() {
    history_then_end(&[], End::Disconnect);
    history_then_end(&["--sandbox", "none"], End::Disconnect);
}
