//! Unit tests of the command line: every Kata launch form, `-o` lists, and errors.

use super::*;
use crate::daemon::config::{ImageSource, Sandbox, Seccomp, TableSource};
use std::path::Path;

fn run(args: &[&str]) -> Config {
    let mut all = vec!["puzzlefs-virtiofsd"];
    all.extend_from_slice(args);
    match parse_args(all).unwrap() {
        Command::Run(c) => *c,
        other => panic!("expected a run, got {other:?}"),
    }
}

fn err(args: &[&str]) -> String {
    let mut all = vec!["puzzlefs-virtiofsd"];
    all.extend_from_slice(args);
    match parse_args(all) {
        Err(DaemonError::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn kata_go_runtime_form() {
    let c = run(&[
        "--syslog",
        "--cache=auto",
        "--shared-dir=/run/kata/shared",
        "--fd=3",
        "--thread-pool-size=1",
        "--announce-submounts",
        "--xattr",
    ]);
    assert_eq!(c.socket, SocketSpec::Fd(3));
    assert_eq!(c.source, Source::SharedDir("/run/kata/shared".into()));
    assert_eq!(c.cache, CachePolicy::Auto);
    assert_eq!(c.thread_pool_size, 1);
    assert!(c.syslog && c.xattr);
    assert!(c.ignored.iter().any(|i| i == "--announce-submounts"));
}

#[test]
fn kata_runtime_rs_form() {
    let c = run(&[
        "--socket-path",
        "/run/vfs.sock",
        "--shared-dir",
        "/srv",
        "--cache",
        "never",
        "--thread-pool-size=1",
        "-o",
        "announce_submounts",
    ]);
    assert_eq!(c.socket, SocketSpec::Path("/run/vfs.sock".into()));
    assert_eq!(c.source, Source::SharedDir("/srv".into()));
    assert_eq!(c.cache, CachePolicy::Never);
    assert!(!c.syslog && !c.xattr);
    assert!(c.ignored.iter().any(|i| i == "--announce-submounts"));
}

#[test]
fn socket_aliases_and_equals_forms() {
    let c = run(&["--socket-path=/a", "--shared-dir", "/d"]);
    assert_eq!(c.socket, SocketSpec::Path("/a".into()));
    let c = run(&["--socket", "/b", "--shared-dir", "/d"]);
    assert_eq!(c.socket, SocketSpec::Path("/b".into()));
    let c = run(&["--socket=/c", "--shared-dir=/d", "--cache=always"]);
    assert_eq!(c.socket, SocketSpec::Path("/c".into()));
    assert_eq!(c.cache, CachePolicy::Always);
    let c = run(&["--fd", "7", "--shared-dir", "/d", "--cache", "metadata"]);
    assert_eq!(c.socket, SocketSpec::Fd(7));
    assert_eq!(c.cache, CachePolicy::Metadata);
}

#[test]
fn defaults() {
    let c = run(&["--socket-path", "/s", "--shared-dir", "/d"]);
    assert_eq!(c.cache, CachePolicy::Auto);
    assert!(c.thread_pool_size >= 2);
    assert_eq!(c.log_level, log::LevelFilter::Info);
    assert_eq!(c.sandbox, Sandbox::Namespace, "virtiofsd's default");
    assert_eq!(c.seccomp, Seccomp::Kill, "virtiofsd's default");
    assert!(
        !c.read_only,
        "a shared directory is read-write, as virtiofsd serves it"
    );
    assert!(c.ignored.is_empty());
}

#[test]
fn readonly_flag_and_option_are_honoured_writeback_is_ignored() {
    let base = ["--socket-path=/s", "--shared-dir=/d"];
    for extra in [
        &["--readonly"][..],
        &["-o", "readonly"],
        &["-o", "cache=auto,readonly"],
    ] {
        let c = run(&[&base[..], extra].concat());
        assert!(c.read_only, "{extra:?}");
        assert!(
            c.ignored.is_empty(),
            "{extra:?} is honoured: {:?}",
            c.ignored
        );
    }
    assert!(err(&[&base[..], &["-o", "readonly=1"]].concat()).contains("takes no value"));
    let c = run(&[&base[..], &["--writeback", "-o", "writeback"]].concat());
    assert!(!c.read_only);
    assert_eq!(c.ignored, vec!["-o writeback", "--writeback"]);
}

#[test]
fn virtiofsd_o_options() {
    let c = run(&[
        "--socket-path=/s",
        "-o",
        "source=/srv,cache=none,xattr",
        "-o",
        "log_level=debug,flock,no_posix_lock",
        "-oallow_direct_io",
    ]);
    assert_eq!(c.source, Source::SharedDir("/srv".into()));
    assert_eq!(c.cache, CachePolicy::Never);
    assert!(c.xattr && c.allow_direct_io);
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    assert_eq!(c.ignored, vec!["-o flock", "-o no_posix_lock"]);
    // Flags win over -o.
    let c = run(&[
        "--socket-path=/s",
        "--shared-dir=/a",
        "--cache=always",
        "-o",
        "source=/b,cache=never",
    ]);
    assert_eq!(c.source, Source::SharedDir("/a".into()));
    assert_eq!(c.cache, CachePolicy::Always);
}

#[test]
fn o_errors() {
    assert!(err(&["--socket-path=/s", "--shared-dir=/d", "-o", "bogus"]).contains("-o bogus"));
    assert!(err(&["--socket-path=/s", "-o", "source="]).contains("needs a value"));
    assert!(err(&["--socket-path=/s", "-o", "source=/d,cache=sometimes"]).contains("sometimes"));
    assert!(err(&["--socket-path=/s", "-o", "source=/d,xattr=1"]).contains("takes no value"));
}

#[test]
fn image_and_digest() {
    let digest = "ab".repeat(32);
    let c = run(&[
        "--socket-path=/s",
        "--image",
        "/images/oci:v1",
        "--digest",
        &format!("sha256:{}", digest.to_uppercase()),
        "--shared-dir=/kata",
        "--fs-verity",
        &"cd".repeat(32),
    ]);
    assert_eq!(
        c.source,
        Source::Image(ImageSource {
            oci_dir: "/images/oci".into(),
            tag: "v1".into(),
            digest: Some(crate::format::Digest::parse(&digest).unwrap()),
            fs_verity: Some([0xcd; 32]),
        })
    );
    assert!(c.ignored.iter().any(|i| i.starts_with("--shared-dir")));
    let c = run(&["--socket-path=/s", "--image=dir:with:colon:tag"]);
    let Source::Image(img) = c.source else {
        panic!()
    };
    assert_eq!(img.oci_dir, PathBuf::from("dir:with:colon"));
    assert_eq!(img.tag, "tag");
    assert!(err(&["--socket-path=/s", "--image", "notag"]).contains("OCI_DIR:TAG"));
    assert!(err(&["--socket-path=/s", "--image", "d:t", "--digest", "12"]).contains("sha256"));
    assert!(
        err(&["--socket-path=/s", "--image", "d:t", "--fs-verity", "12"]).contains("fs-verity")
    );
    assert!(err(&[
        "--socket-path=/s",
        "--shared-dir=/d",
        "--fs-verity",
        &"cd".repeat(32)
    ])
    .contains("--image"));
    assert!(err(&["--socket-path=/s", "--shared-dir=/d", "--digest", &digest]).contains("image"));
}

#[test]
fn socket_errors() {
    assert!(err(&["--shared-dir=/d"]).contains("--socket-path"));
    assert!(err(&["--socket-path=/s", "--fd=3", "--shared-dir=/d"]).contains("not both"));
    assert!(err(&["--fd=-1", "--shared-dir=/d"]).contains("file descriptor"));
    assert!(err(&["--fd=x", "--shared-dir=/d"]).contains("--fd"));
    assert!(err(&["--socket-path=/s"]).contains("nothing to serve"));
}

#[test]
fn unknown_flags_are_errors() {
    let m = err(&["--socket-path=/s", "--shared-dir=/d", "--bogus"]);
    assert!(m.contains("--bogus"), "{m}");
    assert!(!m.contains('\n'));
    let m = err(&["--socket-path=/s", "--shared-dir=/d", "-z"]);
    assert!(m.contains("-z"), "{m}");
    assert!(err(&["--socket-path=/s", "--shared-dir=/d", "--cache"]).contains("--cache"));
}

#[test]
fn every_sandbox_and_seccomp_value() {
    let base = ["--socket-path=/s", "--image=/o:t"];
    for (value, want) in [
        ("none", Sandbox::None),
        ("namespace", Sandbox::Namespace),
        ("chroot", Sandbox::Chroot),
    ] {
        let c = run(&[&base[..], &["--sandbox", value]].concat());
        assert_eq!(c.sandbox, want, "--sandbox {value}");
        assert!(c.ignored.is_empty(), "--sandbox is honoured, not ignored");
    }
    for (value, want) in [
        ("none", Seccomp::None),
        ("kill", Seccomp::Kill),
        ("log", Seccomp::Log),
        ("trap", Seccomp::Trap),
    ] {
        let flag = format!("--seccomp={value}");
        let c = run(&[base[0], base[1], &flag]);
        assert_eq!(c.seccomp, want, "--seccomp {value}");
    }
    for bad in ["", "Namespace", "chroot ", "kill"] {
        let e = err(&[&base[..], &["--sandbox", bad]].concat());
        assert!(e.contains("none, namespace or chroot"), "{bad:?}: {e}");
    }
    for bad in ["", "KILL", "allow", "namespace"] {
        let e = err(&[&base[..], &["--seccomp", bad]].concat());
        assert!(e.contains("none, kill, log or trap"), "{bad:?}: {e}");
    }
    let e = err(&[&base[..], &["--sandbox=none", "--sandbox=chroot"]].concat());
    assert!(e.contains("--sandbox"), "{e}");
}

#[test]
fn sandbox_seccomp_log_level() {
    let c = run(&[
        "--socket-path=/s",
        "--shared-dir=/d",
        "--sandbox=chroot",
        "--seccomp",
        "kill",
        "--log-level=warn",
        "--tag=myfs",
        "--readonly",
        "-f",
    ]);
    assert_eq!(c.sandbox, Sandbox::Chroot);
    assert_eq!(c.seccomp, Seccomp::Kill);
    assert_eq!(c.log_level, log::LevelFilter::Warn);
    assert!(c.read_only);
    assert!(c.ignored.iter().any(|i| i.starts_with("--tag myfs")));
    assert!(c.ignored.iter().any(|i| i == "-f"));
    let c = run(&["--socket-path=/s", "--shared-dir=/d", "-d"]);
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    assert!(err(&["--socket-path=/s", "--shared-dir=/d", "--sandbox=jail"]).contains("jail"));
    assert!(err(&["--socket-path=/s", "--shared-dir=/d", "--seccomp=x"]).contains("seccomp"));
    assert!(err(&["--socket-path=/s", "--shared-dir=/d", "--log-level=loud"]).contains("loud"));
    assert!(err(&[
        "--socket-path=/s",
        "--shared-dir=/d",
        "--thread-pool-size=5000"
    ])
    .contains("thread-pool-size"));
}

#[test]
fn help_version_capabilities() {
    assert!(matches!(
        parse_args(["p", "--help"]).unwrap(),
        Command::Help(h) if h.contains("--socket-path")
    ));
    assert!(matches!(
        parse_args(["p", "-V"]).unwrap(),
        Command::Version(_)
    ));
    assert!(matches!(
        parse_args(["p", "--print-capabilities"]).unwrap(),
        Command::PrintCapabilities(j) if j.contains("\"fs\"")
    ));
}

#[test]
fn chunk_store_size_and_dir() {
    let img = ["--socket-path", "/s", "--image", "/oci:t"];
    let c = run(&img);
    assert_eq!(
        (c.chunk_store_bytes, c.chunk_store_dir.as_deref()),
        (CHUNK_STORE_BYTES, Some(Path::new("/var/tmp")))
    );
    for (size, bytes) in [
        ("0", 0),
        ("4096", 4096),
        ("64K", 64 << 10),
        ("256M", 256 << 20),
        ("2G", 2 << 30),
    ] {
        let mut args = img.to_vec();
        args.extend(["--cache-size", size]);
        assert_eq!(run(&args).chunk_store_bytes, bytes, "{size}");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut args = img.to_vec();
    args.extend(["--cache-dir", d]);
    let c = run(&args);
    assert_eq!(c.chunk_store_dir.as_deref(), Some(dir.path()));
    assert!(
        !c.chunk_store_fallback,
        "a directory asked for is not silently replaced"
    );
    let c = run(&img);
    assert_eq!(c.chunk_store_dir.as_deref(), Some(Path::new("/var/tmp")));
    assert!(c.chunk_store_fallback);
    let mut args = img.to_vec();
    args.push("--cache-in-memory");
    assert_eq!(run(&args).chunk_store_dir, None);
    args.extend(["--cache-dir", d]);
    assert!(err(&args).contains("cannot be used with"));
    for bad in ["x", "12Q", "1.5M", "2000G", ""] {
        let mut args = img.to_vec();
        args.extend(["--cache-size", bad]);
        assert!(err(&args).contains("--cache-size"), "{bad}");
    }
    let mut args = img.to_vec();
    args.extend(["--cache-dir", "/no/such/dir"]);
    assert!(err(&args).contains("not a directory"));
}

#[test]
fn kata_nydus_forms() {
    // Kata's Go runtime (virtcontainers/nydusd.go): no --shared-dir, no bootstrap.
    let c = run(&[
        "virtiofs",
        "--log-level",
        "info",
        "--apisock",
        "/run/vc/vm/s/nydusd-api.sock",
        "--sock",
        "/run/vc/vm/s/vhost-fs.sock",
    ]);
    assert_eq!(
        c.socket,
        SocketSpec::Path("/run/vc/vm/s/vhost-fs.sock".into())
    );
    assert_eq!(
        c.source,
        Source::Table(TableSource {
            apisock: "/run/vc/vm/s/nydusd-api.sock".into(),
            allow_mount_from: Vec::new(),
            id: None,
        })
    );
    assert_eq!(c.log_level, log::LevelFilter::Info);
    // runtime-rs adds --hybrid-mode; Kata's default extra args are virtiofsd's.
    let c = run(&[
        "virtiofs",
        "--hybrid-mode",
        "--log-level",
        "debug",
        "--apisock",
        "a.sock",
        "--sock",
        "v.sock",
        "--thread-pool-size=1",
        "-o",
        "announce_submounts",
        "--id",
        "sandbox-1",
        "--allow-mount-from",
        "/run/kata-containers",
        "--allow-mount-from=/var/lib/images",
    ]);
    let Source::Table(t) = &c.source else {
        panic!("{:?}", c.source)
    };
    assert_eq!(t.id.as_deref(), Some("sandbox-1"));
    assert_eq!(t.allow_mount_from.len(), 2);
    assert_eq!(c.thread_pool_size, 1);
    assert!(c.ignored.iter().any(|i| i == "--hybrid-mode"));
}

#[test]
fn kata_nydus_form_errors() {
    assert!(err(&["virtiofs", "--sock", "v.sock"]).contains("--apisock"));
    let both = err(&["--apisock=a", "--sock=v", "--shared-dir=/d"]);
    assert!(both.contains("through the API"), "{both}");
    assert!(err(&["--apisock=a", "--sock=v", "--image=/o:t"]).contains("through the API"));
    assert!(err(&["--sock=v", "--allow-mount-from=/x", "--shared-dir=/d"]).contains("apisock"));
    assert!(err(&["virtiofs", "--apisock=a"]).contains("--socket-path"));
}

/// Every `-o` option docs/daemon.md lists as accepted is accepted (and logged as ignored);
/// the `no_` forms virtiofsd lacks are refused.
#[test]
fn documented_ignored_o_options() {
    let base = ["--socket-path=/s", "--shared-dir=/srv", "-o"];
    for opt in [
        "flock",
        "no_flock",
        "posix_lock",
        "no_posix_lock",
        "writeback",
        "no_writeback",
        "readdirplus",
        "no_readdirplus",
        "posix_acl",
        "no_posix_acl",
        "security_label",
        "no_security_label",
        "killpriv_v2",
        "no_killpriv_v2",
        "no_announce_submounts",
        "norace",
        "timeout=5",
        "xattrmap=:map::user.virtiofs.:",
        "modcaps=+sys_admin",
    ] {
        let c = run(&[&base[..], &[opt]].concat());
        assert_eq!(c.ignored, vec![format!("-o {opt}")], "{opt}");
    }
    for opt in ["no_timeout", "no_xattrmap", "no_modcaps", "no_readonly"] {
        assert!(
            err(&[&base[..], &[opt]].concat()).contains("unknown option"),
            "{opt}"
        );
    }
}

#[test]
fn reconnect_is_off_unless_asked_in_every_mode() {
    let image = ["--sock=v", "--image=/oci:t"];
    assert!(!run(&image).reconnect);
    assert!(run(&[&image[..], &["--reconnect"]].concat()).reconnect);
    assert!(run(&["--fd=3", "--shared-dir=/d", "--reconnect"]).reconnect);
    let table = ["virtiofs", "--apisock=a", "--sock=v"];
    assert!(!run(&table).reconnect);
    assert!(run(&[&table[..], &["--reconnect"]].concat()).reconnect);
}

/// A flag wins over the `-o` option that says otherwise (docs/daemon.md).
#[test]
fn flags_win_over_o_options() {
    let c = run(&[
        "--socket-path=/s",
        "--shared-dir=/flag",
        "--cache=never",
        "--xattr",
        "--allow-direct-io",
        "--log-level=debug",
        "-o",
        "source=/o,cache=always,no_xattr,no_allow_direct_io,log_level=error",
    ]);
    assert_eq!(c.source, Source::SharedDir("/flag".into()));
    assert_eq!(c.cache, CachePolicy::Never);
    assert!(c.xattr && c.allow_direct_io);
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    let o_only = run(&["--socket-path=/s", "-o", "source=/o,cache=always,no_xattr"]);
    assert_eq!(o_only.source, Source::SharedDir("/o".into()));
    assert_eq!(o_only.cache, CachePolicy::Always);
    assert!(!o_only.xattr);
}
