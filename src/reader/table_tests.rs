//! Tests of layer merging and of the validation of hostile metadata.

use super::*;
use crate::format::{DirEntry, Inode, InodeKind, Rootfs, Timespec, MANIFEST_VERSION};

fn dir(ino: u64, entries: &[(&str, u64)], look_below: bool) -> Inode {
    Inode {
        ino,
        kind: InodeKind::Dir {
            entries: entries
                .iter()
                .map(|(n, i)| DirEntry {
                    ino: *i,
                    name: n.as_bytes().to_vec(),
                })
                .collect(),
            look_below,
        },
        uid: 0,
        gid: 0,
        permissions: 0o755,
        xattrs: vec![],
        symlink_target: None,
        mtime: Timespec::default(),
        file_digest: None,
    }
}

fn file(ino: u64) -> Inode {
    Inode {
        kind: InodeKind::File { chunks: vec![] },
        permissions: 0o644,
        ..dir(ino, &[], false)
    }
}

fn with_kind(ino: u64, kind: InodeKind) -> Inode {
    Inode { kind, ..file(ino) }
}

fn table(layers: Vec<Vec<Inode>>) -> Result<InodeTable, ReaderError> {
    InodeTable::build(&Rootfs {
        layers,
        verity: Default::default(),
        manifest_version: MANIFEST_VERSION,
        chunking: None,
        packs: Vec::new(),
    })
}

fn names(t: &InodeTable, id: NodeId) -> Vec<String> {
    t.entries(id)
        .iter()
        .map(|e| String::from_utf8_lossy(t.name(e)).into_owned())
        .collect()
}

fn err(layers: Vec<Vec<Inode>>) -> String {
    table(layers).expect_err("must be rejected").to_string()
}

#[test]
fn single_layer_tree_with_hard_links_and_nlink() {
    let t = table(vec![vec![
        dir(1, &[("b", 2), ("a", 3), ("h1", 4), ("h2", 4)], false),
        dir(2, &[("h3", 4)], false),
        dir(3, &[], false),
        file(4),
    ]])
    .unwrap();
    assert_eq!(names(&t, ROOT), ["a", "b", "h1", "h2"], "sorted");
    assert_eq!(t.node(ROOT).nlink, 4, "2 + two subdirectories");
    let h = t.lookup(ROOT, b"h1").unwrap();
    assert_eq!(t.lookup(ROOT, b"h2"), Some(h));
    assert_eq!(t.node(h).nlink, 3);
    assert_eq!(t.resolve(b"/b/h3", false).unwrap(), h);
    assert_eq!(t.len(), 4);
}

#[test]
fn upper_layers_shadow_and_whiteouts_hide() {
    // Lower: /keep, /gone, /d/x. Upper: root re-listed without "gone" plus whiteout entry,
    // /d with lookBelow adding y, /keep replaced by a symlink.
    let lower = vec![
        dir(1, &[("keep", 2), ("gone", 3), ("d", 4)], false),
        file(2),
        file(3),
        dir(4, &[("x", 5)], false),
        file(5),
    ];
    let mut link = with_kind(2, InodeKind::Symlink);
    link.symlink_target = Some(b"/target".to_vec());
    let upper = vec![
        dir(1, &[("keep", 2), ("gone", 3), ("d", 4)], false),
        link,
        with_kind(3, InodeKind::Whiteout),
        dir(4, &[("y", 6)], true),
        file(6),
    ];
    let t = table(vec![upper, lower]).unwrap();
    assert_eq!(names(&t, ROOT), ["d", "keep"]);
    let keep = t.lookup(ROOT, b"keep").unwrap();
    assert!(matches!(t.node(keep).data, NodeData::Symlink(_)));
    let d = t.lookup(ROOT, b"d").unwrap();
    assert_eq!(names(&t, d), ["x", "y"]);
}

#[test]
fn hostile_names_are_rejected() {
    for bad in ["..", ".", "a/b", "", "nul\0x", &"n".repeat(256)] {
        let e = err(vec![vec![dir(1, &[(bad, 2)], false), file(2)]]);
        assert!(e.contains("invalid file name"), "{bad:?}: {e}");
    }
    let e = err(vec![vec![
        dir(1, &[("a", 2), ("a", 3)], false),
        file(2),
        file(3),
    ]]);
    assert!(e.contains("two entries named"), "{e}");
}

#[test]
fn cycles_dangling_entries_and_bad_roots_are_rejected() {
    let e = err(vec![vec![dir(1, &[("up", 1)], false)]]);
    assert!(e.contains("linked more than once"), "{e}");
    let e = err(vec![vec![
        dir(1, &[("a", 2), ("b", 2)], false),
        dir(2, &[], false),
    ]]);
    assert!(e.contains("linked more than once"), "{e}");
    let e = err(vec![vec![
        dir(1, &[("a", 2)], false),
        dir(2, &[("loop", 1)], false),
    ]]);
    assert!(e.contains("linked more than once"), "{e}");
    let e = err(vec![vec![dir(1, &[("a", u64::MAX)], false)]]);
    assert!(e.contains("does not exist"), "{e}");
    assert!(err(vec![vec![file(1)]]).contains("not a directory"));
    assert!(err(vec![vec![file(2)]]).contains("no root"));
    assert!(err(vec![vec![dir(1, &[], false), file(1)]]).contains("defined twice"));
    // A whiteout beside a live definition of the same inode (upstream writes this when one
    // name of a hard-linked file is deleted): the live one wins, in either order.
    for layer in [
        vec![
            dir(1, &[("f", 2)], false),
            with_kind(2, InodeKind::Whiteout),
            file(2),
        ],
        vec![
            dir(1, &[("f", 2)], false),
            file(2),
            with_kind(2, InodeKind::Whiteout),
        ],
    ] {
        let t = table(vec![layer]).unwrap();
        assert!(t.lookup(ROOT, b"f").is_some());
    }
    assert!(err(vec![]).contains("no root"));
}

#[test]
fn bad_values_are_rejected() {
    let mut big = file(2);
    big.kind = InodeKind::File {
        chunks: vec![crate::format::FileChunk {
            blob: crate::format::BlobRef {
                digest: crate::format::Digest([1; 32]),
                offset: u64::MAX - 1,
                compressed: false,
            },
            len: 10,
        }],
    };
    assert!(err(vec![vec![dir(1, &[("f", 2)], false), big.clone()]]).contains("overflows"));
    // No chunk holds more than MAX_BLOB_BYTES: a range past it is refused at open.
    let at = |offset| {
        let mut f = big.clone();
        if let InodeKind::File { chunks } = &mut f.kind {
            chunks[0].blob.offset = offset;
        }
        vec![vec![dir(1, &[("f", 2)], false), f]]
    };
    assert!(err(at(crate::reader::MAX_BLOB_BYTES - 5)).contains("chunk limit"));
    assert!(table(at(crate::reader::MAX_BLOB_BYTES - 10)).is_ok());
    let mut dev = with_kind(
        2,
        InodeKind::Chr {
            major: 1 << 40,
            minor: 0,
        },
    );
    assert!(err(vec![vec![dir(1, &[("d", 2)], false), dev.clone()]]).contains("device"));
    dev.kind = InodeKind::Symlink;
    assert!(err(vec![vec![dir(1, &[("l", 2)], false), dev.clone()]]).contains("no target"));
    dev.symlink_target = Some(b"a\0b".to_vec());
    assert!(err(vec![vec![dir(1, &[("l", 2)], false), dev]]).contains("invalid target"));
    let mut x = file(2);
    x.xattrs = vec![crate::format::Xattr {
        key: vec![],
        value: vec![],
    }];
    assert!(err(vec![vec![dir(1, &[("x", 2)], false), x]]).contains("xattr"));
    let mut t = file(2);
    t.mtime.nsec = 1_000_000_000;
    assert!(err(vec![vec![dir(1, &[("t", 2)], false), t]]).contains("nanoseconds"));
}

#[test]
fn resolve_follows_symlinks_inside_the_image_only() {
    let mut up = with_kind(3, InodeKind::Symlink);
    up.symlink_target = Some(b"../../../../d".to_vec());
    let mut abs = with_kind(4, InodeKind::Symlink);
    abs.symlink_target = Some(b"/d/f".to_vec());
    let mut l1 = with_kind(6, InodeKind::Symlink);
    l1.symlink_target = Some(b"l2".to_vec());
    let mut l2 = with_kind(7, InodeKind::Symlink);
    l2.symlink_target = Some(b"l1".to_vec());
    let t = table(vec![vec![
        dir(
            1,
            &[("d", 2), ("up", 3), ("abs", 4), ("l1", 6), ("l2", 7)],
            false,
        ),
        dir(2, &[("f", 5)], false),
        up,
        abs,
        file(5),
        l1,
        l2,
    ]])
    .unwrap();
    let f = t.resolve(b"/d/f", true).unwrap();
    assert_eq!(
        t.resolve(b"up/f", true).unwrap(),
        f,
        ".. stops at the image root"
    );
    assert_eq!(t.resolve(b"abs", true).unwrap(), f);
    assert_ne!(t.resolve(b"abs", false).unwrap(), f);
    assert!(matches!(
        t.resolve(b"/l1", true),
        Err(ReaderError::SymlinkLoop(_))
    ));
    assert!(matches!(
        t.resolve(b"/d/f/x", true),
        Err(ReaderError::NotADirectory(_))
    ));
    assert!(matches!(
        t.resolve(b"/nope", true),
        Err(ReaderError::NotFound(_))
    ));
}

/// Sparse and unsorted inode numbers take the searched path, unsorted entries are sorted, and
/// a duplicate name is found whatever the order.
#[test]
fn sparse_numbers_and_unsorted_entries() {
    let t = table(vec![vec![
        file(1_000_000),
        dir(1, &[("z", 77), ("a", 1_000_000), ("m", 5)], false),
        file(77),
        dir(5, &[("inner", 1_000_000)], false),
    ]])
    .unwrap();
    assert_eq!(names(&t, ROOT), ["a", "m", "z"]);
    let a = t.lookup(ROOT, b"a").unwrap();
    assert_eq!(t.node(a).ino, 1_000_000);
    assert_eq!(t.node(a).nlink, 2);
    assert_eq!(t.resolve(b"/m/inner", true).unwrap(), a);
    assert_eq!(t.node(t.lookup(ROOT, b"z").unwrap()).ino, 77);
    assert!(t.lookup(ROOT, b"b").is_none());

    let dupe = err(vec![vec![
        dir(1, &[("b", 2), ("a", 3), ("b", 3)], false),
        file(2),
        file(3),
    ]]);
    assert!(dupe.contains("two entries named \"b\""), "{dupe}");
    let missing = err(vec![vec![dir(1, &[("x", 9)], false), file(2)]]);
    assert!(
        missing.contains("inode 9, which does not exist"),
        "{missing}"
    );
}

/// A one-file image whose file is `refs` (offset, length) of `pack`, referenced compressed
/// or not as `compressed` says.
fn packed_table(
    pack: crate::format::Pack,
    compressed: bool,
    refs: &[(u64, u64)],
) -> Result<InodeTable, ReaderError> {
    let chunks = refs
        .iter()
        .map(|&(offset, len)| crate::format::FileChunk {
            blob: crate::format::BlobRef {
                digest: pack.digest,
                offset,
                compressed,
            },
            len,
        })
        .collect();
    InodeTable::build(&Rootfs {
        layers: vec![vec![
            dir(ROOT_INO, &[("f", 2)], false),
            with_kind(2, InodeKind::File { chunks }),
        ]],
        verity: Default::default(),
        manifest_version: MANIFEST_VERSION,
        chunking: None,
        packs: vec![pack],
    })
}

fn packed(
    digest: &[u8],
    offset: u64,
    len: u64,
    stored_offset: u64,
    stored_len: u64,
) -> crate::format::PackedChunk {
    crate::format::PackedChunk {
        digest: Digest::of(digest),
        offset,
        len,
        stored_offset,
        stored_len,
    }
}

#[test]
fn file_chunks_in_packs_resolve_to_their_chunk() {
    let pack = crate::format::Pack {
        digest: Digest::of(b"pack"),
        compressed: true,
        chunks: vec![packed(b"a", 0, 100, 0, 40), packed(b"b", 100, 50, 40, 30)],
        parts: Vec::new(),
    };
    let t = packed_table(pack, true, &[(10, 90), (100, 50)]).unwrap();
    let id = t.resolve(b"/f", false).unwrap();
    let extents = t.extents(id);
    assert_eq!(t.node(id).size, 140);
    let first = t.chunks()[extents[0].chunk as usize];
    assert_eq!(
        (first.digest, extents[0].chunk_offset),
        (Digest::of(b"a"), 10)
    );
    let slice = first.pack.unwrap();
    assert_eq!(
        (slice.pack, slice.stored_offset, slice.stored_len),
        (Digest::of(b"pack"), 0, 40)
    );
    let second = t.chunks()[extents[1].chunk as usize];
    assert_eq!(
        (second.digest, extents[1].chunk_offset),
        (Digest::of(b"b"), 0)
    );
    assert_eq!(t.data_files().len(), 1);
}

#[test]
fn hostile_pack_tables_are_rejected() {
    let pack = |compressed, chunks| crate::format::Pack {
        digest: Digest::of(b"pack"),
        compressed,
        chunks,
        parts: Vec::new(),
    };
    let two = || vec![packed(b"a", 0, 100, 0, 40), packed(b"b", 100, 50, 40, 30)];
    let cases = [
        // A file chunk straddling two packed chunks, before the first, past the last.
        (
            pack(true, two()),
            true,
            vec![(90, 20)],
            "not inside one of its chunks",
        ),
        (
            pack(true, vec![packed(b"a", 10, 100, 0, 40)]),
            true,
            vec![(0, 5)],
            "not inside",
        ),
        (pack(true, two()), true, vec![(150, 1)], "not inside"),
        // A compressed pack referenced as uncompressed.
        (
            pack(true, two()),
            false,
            vec![(0, 10)],
            "both compressed and uncompressed",
        ),
        // Overlapping chunks, in contents or in stored bytes.
        (
            pack(
                true,
                vec![packed(b"a", 0, 100, 0, 40), packed(b"b", 99, 50, 40, 30)],
            ),
            true,
            vec![],
            "overlapping",
        ),
        (
            pack(
                true,
                vec![packed(b"a", 0, 100, 0, 40), packed(b"b", 100, 50, 39, 30)],
            ),
            true,
            vec![],
            "overlapping",
        ),
        // Raw chunks whose stored bytes are not where upstream readers look.
        (
            pack(false, vec![packed(b"a", 0, 100, 1, 100)]),
            false,
            vec![],
            "impossible sizes",
        ),
        (
            pack(false, vec![packed(b"a", 0, 100, 0, 99)]),
            false,
            vec![],
            "impossible sizes",
        ),
        // Empty, huge, or overflowing chunks.
        (
            pack(true, vec![packed(b"a", 0, 0, 0, 1)]),
            true,
            vec![],
            "impossible sizes",
        ),
        (
            pack(true, vec![packed(b"a", 0, 1 << 40, 0, 1)]),
            true,
            vec![],
            "impossible sizes",
        ),
        (
            pack(true, vec![packed(b"a", u64::MAX - 5, 10, 0, 1)]),
            true,
            vec![],
            "chunk",
        ),
    ];
    for (i, (p, compressed, refs, want)) in cases.into_iter().enumerate() {
        let err = packed_table(p, compressed, &refs).expect_err(&format!("case {i} accepted"));
        let text = err.to_string();
        assert!(text.contains(want), "case {i}: {text}");
    }
}

#[test]
fn side_arrays_give_each_node_its_own_xattrs_target_and_digest() {
    let xattr = |k: &str, v: &str| crate::format::Xattr {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    };
    let mut a = file(2);
    a.xattrs = vec![xattr("user.a", "1"), xattr("user.b", "22")];
    a.file_digest = Some(crate::format::Digest([7; 32]));
    let b = file(3);
    let mut c = with_kind(4, InodeKind::Symlink);
    c.symlink_target = Some(b"../target".to_vec());
    c.xattrs = vec![xattr("trusted.c", "")];
    let mut d = file(5);
    d.file_digest = Some(crate::format::Digest([9; 32]));
    let layers = vec![vec![
        dir(1, &[("a", 2), ("b", 3), ("c", 4), ("d", 5)], false),
        a,
        b,
        c,
        d,
    ]];
    let t = table(layers.clone()).unwrap();
    let id = |name: &str| t.lookup(ROOT, name.as_bytes()).unwrap();
    let keys = |name: &str| -> Vec<String> {
        t.xattrs(t.node(id(name)))
            .iter()
            .map(|x| format!("{}={}", show(&x.key), show(&x.value)))
            .collect()
    };
    assert_eq!(keys("a"), ["user.a=1", "user.b=22"]);
    assert!(keys("b").is_empty() && keys("d").is_empty());
    assert_eq!(keys("c"), ["trusted.c="]);
    assert_eq!(t.symlink_target(t.node(id("c"))), Some(&b"../target"[..]));
    assert_eq!(t.symlink_target(t.node(id("a"))), None);
    assert_eq!(t.file_digest(id("a")).map(|d| d.0[0]), Some(7));
    assert_eq!(t.file_digest(id("b")), None);
    assert_eq!(t.file_digest(id("d")).map(|d| d.0[0]), Some(9));
    let lean = InodeTable::build_with(
        &Rootfs {
            layers,
            verity: Default::default(),
            manifest_version: MANIFEST_VERSION,
            chunking: None,
            packs: Vec::new(),
        },
        FileDigests::Drop,
    )
    .unwrap();
    assert_eq!(lean.file_digest(id("a")), None);
    assert!(lean.heap_bytes() < t.heap_bytes());
    // The sizes an opened image's memory is made of (one node per inode, one extent per
    // chunk of each file).
    assert_eq!(std::mem::size_of::<Node>(), 64);
    assert_eq!(std::mem::size_of::<Extent>(), 20);
    assert_eq!(std::mem::size_of::<Entry>(), 8);
}
