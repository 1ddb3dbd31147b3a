//! The control plane end to end in one process: a client and an executor on a socket pair,
//! sources opened on the host side as the supervisor opens them.

use std::fs;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

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

#[test]
fn requests_travel_with_their_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"image file").unwrap();
    let oci_path = tmp.path().join("oci");
    build(
        &src,
        &OciDir::create(&oci_path).unwrap(),
        "t",
        &BuildOptions::default(),
    )
    .unwrap();
    let share = tmp.path().join("share");
    fs::create_dir_all(&share).unwrap();

    let table = Arc::new(MountTable::new());
    let store = Arc::new(FileChunkCache::new(1 << 20, None).unwrap());
    let defaults = MountDefaults {
        cache: CachePolicy::Auto,
        xattr: false,
        allow_direct_io: false,
    };
    let executor = Executor::new(table.clone(), Mounter::new(store, defaults));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || answer_requests(&theirs, &executor));
    let client = Client::connect(ours).unwrap();
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
        Reply::Done
    );
    assert_eq!(
        mount(&client, &policy, "/rafs/c1/lowerdir", "rafs", &image),
        Reply::Done
    );
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
    server.join().unwrap().unwrap();
}
