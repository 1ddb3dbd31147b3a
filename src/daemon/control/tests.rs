//! The control plane end to end in one process: a client and an executor on a socket pair,
//! sources opened on the host side as the supervisor opens them.

use std::fs;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::builder::{build, BuildOptions};
use crate::fs::CachePolicy;
use crate::mounts::MountDefaults;
use crate::oci::OciDir;
use crate::reader::FileChunkCache;

fn mount(client: &Client, policy: &SourcePolicy, at: &str, fs_type: &str, source: &str) -> Reply {
    let request = Request::Mount {
        mountpoint: at.into(),
        fs_type: fs_type.into(),
        source: source.into(),
        config: String::new(),
    };
    let spec = match MountSpec::parse(fs_type, source, "") {
        Ok(s) => s,
        Err(e) => return Reply::failed(&e),
    };
    let dir = match open_source(&spec, policy) {
        Ok(d) => d,
        Err(e) => return Reply::failed(&e),
    };
    client.call(&request, Some(&dir)).unwrap()
}

/// A temporary directory holding an image (`oci`, tag `t`, with `etc/name`) and a directory
/// to pass through (`share`, with `host`).
fn fixture() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src/etc");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("name"), b"image file").unwrap();
    let oci_path = tmp.path().join("oci");
    let oci = OciDir::create(&oci_path).unwrap();
    build(src.parent().unwrap(), &oci, "t", &BuildOptions::default()).unwrap();
    let share = tmp.path().join("share");
    fs::create_dir_all(&share).unwrap();
    fs::write(share.join("host"), b"host file").unwrap();
    (tmp, oci_path, share)
}

#[test]
fn requests_travel_with_their_sources() {
    let (_tmp, oci_path, share) = fixture();
    let mut process = generation();
    let table = process.table.clone();
    let client = Client::connect(process.supervisor_end.take().unwrap()).unwrap();
    let nothing_lost = Reply::Restored {
        lost: Vec::new(),
        renumbered: Vec::new(),
    };
    assert_eq!(client.restore(&Journal::new(), &[]).unwrap(), nothing_lost);
    let policy = SourcePolicy {
        allowed: Vec::new(),
        require_private_mount: true,
    };

    let image = format!("{}:t", oci_path.display());
    assert_eq!(
        mount(
            &client,
            &policy,
            "/containers",
            "passthrough_fs",
            share.to_str().unwrap()
        ),
        Reply::Mounted {
            slot: SlotId {
                index: 1,
                generation: 1
            },
            manifest: None
        }
    );
    let Reply::Mounted { slot, manifest } =
        mount(&client, &policy, "/rafs/c1/lowerdir", "rafs", &image)
    else {
        panic!("the image did not mount")
    };
    assert_eq!(slot.index, 2);
    let tagged = OciDir::open(&oci_path)
        .unwrap()
        .resolve("t")
        .unwrap()
        .digest;
    assert_eq!(manifest, Some(tagged.to_string()));
    let Reply::Failed { fault, message } =
        mount(&client, &policy, "/rafs/c1/lowerdir", "rafs", &image)
    else {
        panic!("mounted twice")
    };
    assert_eq!(fault, Fault::Conflict, "{message}");
    let Reply::Failed { fault, .. } = mount(
        &client,
        &policy,
        "/x",
        "rafs",
        &format!("{}:nope", oci_path.display()),
    ) else {
        panic!("an unknown tag mounted")
    };
    assert_eq!(fault, Fault::BadRequest);
    // No descriptor: refused, not a crash.
    let bare = Request::Mount {
        mountpoint: "/y".into(),
        fs_type: "rafs".into(),
        source: image.clone(),
        config: String::new(),
    };
    assert!(matches!(
        client.call(&bare, None).unwrap(),
        Reply::Failed {
            fault: Fault::Internal,
            ..
        }
    ));

    let Reply::Mounts { mounts } = client.call(&Request::Mounts, None).unwrap() else {
        panic!()
    };
    let at: Vec<&str> = mounts.iter().map(|m| m.mountpoint.as_str()).collect();
    assert_eq!(at, ["/containers", "/rafs/c1/lowerdir"]);
    assert_eq!(mounts[1].fs_type, "puzzlefs");
    assert_eq!(mounts[1].source, image);

    let Reply::Metrics { snapshot } = client.call(&Request::Metrics, None).unwrap() else {
        panic!()
    };
    assert_eq!(snapshot.mounts_total, 2);
    assert_eq!(snapshot.chunk_store.capacity_bytes, 1 << 20);

    assert_eq!(
        client
            .call(
                &Request::Umount {
                    mountpoint: "/rafs/c1/lowerdir".into()
                },
                None
            )
            .unwrap(),
        Reply::Done
    );
    let Reply::Failed { fault, .. } = client
        .call(
            &Request::Umount {
                mountpoint: "/rafs/c1/lowerdir".into(),
            },
            None,
        )
        .unwrap()
    else {
        panic!("unmounted twice")
    };
    assert_eq!(fault, Fault::NotFound);
    assert_eq!(table.mounts().len(), 1);
    drop(client);
    process.server.join().unwrap().unwrap();
}

/// A serving process, as a generation runs one: a fresh table that waits for its restore,
/// then answers; `kill` ends it as a crash would (the channel goes dead under it).
struct Generation {
    table: Arc<MountTable>,
    kill: UnixStream,
    supervisor_end: Option<UnixStream>,
    server: std::thread::JoinHandle<std::io::Result<()>>,
}

fn generation() -> Generation {
    let table = Arc::new(MountTable::new());
    let store = Arc::new(FileChunkCache::new(1 << 20, None).unwrap());
    let defaults = MountDefaults {
        cache: CachePolicy::Auto,
        xattr: false,
        allow_direct_io: false,
    };
    let executor = Executor::new(table.clone(), Mounter::new(store, defaults));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let kill = theirs.try_clone().unwrap();
    let server = std::thread::spawn(move || {
        await_restore(&theirs, &executor)?;
        answer_requests(&theirs, &executor)
    });
    Generation {
        table,
        kill,
        supervisor_end: Some(ours),
        server,
    }
}

fn lookup_path(table: &MountTable, path: &str) -> (u64, i64) {
    use fuse_backend_rs::api::filesystem::{Context, FileSystem};
    let mut entry = (1u64, 0i64);
    for name in path.split('/').filter(|n| !n.is_empty()) {
        let name = std::ffi::CString::new(name).unwrap();
        let e = table
            .lookup(&Context::new(), entry.0, &name)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        entry = (e.inode, e.attr.st_size);
    }
    entry
}

fn request(fs_type: &str, source: &str) -> crate::api::MountRequest {
    crate::api::MountRequest {
        fs_type: fs_type.into(),
        source: source.into(),
        config: String::new(),
        overlay: None,
    }
}

/// The supervisor's side across a crash: a request made while no serving process is attached
/// waits for one, a request whose process dies under it gets 503, and the daemon reports INIT
/// meanwhile; the next process gets every live mount back in its slot
/// (an image's inode numbers unchanged), the records stay as they were, and a slot that was
/// free at the crash never hands out a number the dead process could have used.
#[test]
fn a_new_serving_process_gets_the_whole_table_back() {
    use crate::api::{Control, DaemonState};
    let (_tmp, oci_path, share) = fixture();
    let policy = SourcePolicy {
        allowed: Vec::new(),
        require_private_mount: true,
    };
    let control = Arc::new(ApiControl::new(Serving::child(), policy, None));
    let image = format!("{}:t", oci_path.display());
    assert_eq!(control.info().state, DaemonState::Init);

    let mut first = generation();
    let attaching = control.clone();
    let channel = first.supervisor_end.take().unwrap();
    let attached = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        attaching.attach(channel).unwrap();
    });
    // Made before the process is attached: it waits for it.
    let share_src = share.to_str().unwrap();
    control
        .mount("/containers", request("passthrough_fs", share_src))
        .unwrap();
    attached.join().unwrap();
    assert_eq!(control.info().state, DaemonState::Running);
    control
        .mount("/rafs/c1/lowerdir", request("rafs", &image))
        .unwrap();
    control
        .mount("/rafs/c2/lowerdir", request("rafs", &image))
        .unwrap();
    control.umount("/rafs/c2/lowerdir").unwrap();
    let file = lookup_path(&first.table, "/rafs/c1/lowerdir/etc/name");
    let host = lookup_path(&first.table, "/containers/host");
    let records = control.records();

    first.kill.shutdown(std::net::Shutdown::Both).unwrap();
    // A mount sent to the dead process is asked again of the next one.
    let mut second = generation();
    let attaching = control.clone();
    let channel = second.supervisor_end.take().unwrap();
    let attached = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        attaching.attach(channel).unwrap();
    });
    control
        .mount("/rafs/c4/lowerdir", request("rafs", &image))
        .unwrap();
    attached.join().unwrap();
    assert_eq!(control.info().state, DaemonState::Running);
    let mut records = records;
    records.insert(
        "/rafs/c4/lowerdir".into(),
        MountRecord {
            fs_type: "rafs".into(),
            source: image.clone(),
            config: String::new(),
        },
    );
    assert_eq!(control.records(), records);
    control.umount("/rafs/c4/lowerdir").unwrap();
    assert_eq!(
        lookup_path(&second.table, "/rafs/c1/lowerdir/etc/name"),
        file
    );
    let again = lookup_path(&second.table, "/containers/host");
    assert_eq!(again.1, host.1);
    assert_ne!(
        again.0, host.0,
        "a pass-through comes back in a new generation"
    );
    control
        .mount("/rafs/c3/lowerdir", request("rafs", &image))
        .unwrap();
    let c3 = second
        .table
        .mounts()
        .into_iter()
        .find(|m| m.mountpoint == "/rafs/c3/lowerdir")
        .unwrap();
    // Slot 3: generation 1 was c2's, 2 is skipped (free at the crash), 3 was c4's.
    assert_eq!((c3.slot.index, c3.slot.generation), (3, 4));

    // A third process, after the pass-through was renumbered once: it moves on again.
    second.kill.shutdown(std::net::Shutdown::Both).unwrap();
    let mut third = generation();
    control
        .attach(third.supervisor_end.take().unwrap())
        .unwrap();
    assert_eq!(
        lookup_path(&third.table, "/rafs/c1/lowerdir/etc/name"),
        file
    );
    assert_eq!(
        lookup_path(&third.table, "/rafs/c3/lowerdir/etc/name").1,
        file.1
    );
    let third_host = lookup_path(&third.table, "/containers/host");
    assert!(third_host.0 != again.0 && third_host.0 != host.0);

    // With no process attached at all, requests end in 503 (here without the 5 s wait).
    let alone = ApiControl::new(
        Serving::child_waiting(Duration::ZERO),
        SourcePolicy::default(),
        None,
    );
    assert!(matches!(
        alone.metrics(),
        Err(crate::api::ApiError::Unavailable(_))
    ));
    assert!(matches!(
        alone.mount("/z", request("rafs", &image)),
        Err(crate::api::ApiError::Unavailable(_))
    ));
}
