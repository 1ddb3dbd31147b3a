//! [`MountTable`]: the slots, the table's own directories, mounting and unmounting, and the
//! routing of an inode number to the file system that owns it.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use fuse_backend_rs::abi::fuse_abi::{stat64, Attr, FsOptions};
use fuse_backend_rs::api::filesystem::{Context, Entry};

use super::backend::Backend;
use super::inode::{decode, encode, Decoded, SlotId, MAX_MOUNTS};
use super::journal::{Event, Journal};
use super::metrics::{ChunkStoreMetrics, MetricsSnapshot, MountCounters, MountMetrics, Op};
use super::path::Mountpoint;
use super::pseudo::{Child, PseudoTree, ROOT};
use super::MountError;
use crate::format::Digest;

/// How long the guest may cache the table's own directories and the names of mount points:
/// short, so that a mount or unmount is seen within a second even where the guest caches
/// everything else for a day.
pub const PSEUDO_TIMEOUT: Duration = Duration::from_secs(1);

/// FUSE's root inode, in every mounted file system too.
const FS_ROOT: u64 = 1;

/// What a mount request named, for metrics and the daemon's info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLabel {
    /// `passthrough_fs` or `puzzlefs`.
    pub fs_type: String,
    /// The source, as the request gave it.
    pub source: String,
}

/// A file system opened again for [`MountTable::restore`].
pub struct Reopened {
    pub label: MountLabel,
    pub fs: Box<dyn Backend>,
    /// Descriptors it reaches its source through.
    pub keep: Vec<OwnedFd>,
    /// Whether its inode numbers are a pure function of its source (images: yes).
    pub stable_inodes: bool,
}

/// What [`MountTable::restore`] could not bring back as it was.
#[derive(Debug, Default)]
pub struct Restored {
    /// Mounts that could not be opened again, and why.
    pub lost: Vec<(String, MountError)>,
    /// Mounts back in a new generation of their slot (their old inode numbers are stale);
    /// record these with [`Journal::renumber`] so that a later restore knows them.
    pub renumbered: Vec<(String, SlotId)>,
}

/// A live mount, as [`MountTable::mounts`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where.
    pub mountpoint: String,
    /// Which slot numbers its inodes.
    pub slot: SlotId,
    /// What.
    pub label: MountLabel,
    /// Since when.
    pub since: SystemTime,
}

/// A live mount.
pub struct Mounted {
    pub(super) slot: SlotId,
    pub(super) mountpoint: Mountpoint,
    /// The table's directory holding the mount point (the target of `..` at its root).
    pub(super) parent: u64,
    pub(super) label: MountLabel,
    pub(super) fs: Box<dyn Backend>,
    pub(super) counters: MountCounters,
    pub(super) since: SystemTime,
    /// Descriptors the file system reaches its source through, closed after it is dropped.
    _keep: Vec<OwnedFd>,
}

impl Mounted {
    /// Calls `f` on the mounted file system, counting the request as `op`.
    pub(super) fn call<T>(
        &self,
        op: Op,
        f: impl FnOnce(&dyn Backend) -> io::Result<T>,
    ) -> io::Result<T> {
        let start = Instant::now();
        let out = f(&*self.fs);
        self.counters.record(op, start.elapsed(), out.is_err());
        out
    }

    /// The table's entry for an entry of the mounted file system: its inode numbered in this
    /// slot, and `st_ino` the same number (unique across mounts: overlayfs in the guest
    /// compares inode numbers of its upper and lower directories, which may be two mounts).
    pub(super) fn entry_out(&self, mut entry: Entry) -> io::Result<Entry> {
        entry.inode = self.ino_out(entry.inode)?;
        if entry.inode != 0 {
            entry.attr.st_ino = entry.inode;
        }
        Ok(entry)
    }

    /// The table's number for inode `inode` of this mount.
    pub(super) fn ino_out(&self, inode: u64) -> io::Result<u64> {
        encode(self.slot, inode).ok_or_else(|| {
            log::error!(
                "{}: inode {inode} is beyond what a mount may number",
                self.mountpoint.display()
            );
            io::Error::from_raw_os_error(libc::EOVERFLOW)
        })
    }

    /// The entry of its root, as seen from the table's directory holding it.
    pub(super) fn root_entry(&self, ctx: &Context) -> io::Result<Entry> {
        let (attr, attr_timeout) = self.call(Op::Getattr, |fs| fs.getattr(ctx, FS_ROOT, None))?;
        self.entry_out(Entry {
            inode: FS_ROOT,
            generation: 0,
            attr,
            attr_flags: 0,
            attr_timeout,
            entry_timeout: PSEUDO_TIMEOUT,
        })
    }
}

/// Where a request goes.
pub(super) enum Target {
    /// One of the table's own directories.
    Pseudo(u64),
    /// A mounted file system, and the inode in its own numbering.
    Mount(MountRef, u64),
}

/// A live mount, held for one request. It does not touch the mount's reference count (a
/// shared counter every request thread would write), yet keeps the mount alive until
/// dropped, however it is unmounted meanwhile.
pub(super) struct MountRef(arc_swap::Guard<Option<Arc<Mounted>>>);

impl std::ops::Deref for MountRef {
    type Target = Mounted;

    fn deref(&self) -> &Mounted {
        // Made only from a slot found holding a mount.
        self.0.as_deref().expect("a MountRef holds a mount")
    }
}

impl MountRef {
    /// The mount itself, to keep beyond the request.
    pub(super) fn into_arc(self) -> Arc<Mounted> {
        arc_swap::Guard::into_inner(self.0).expect("a MountRef holds a mount")
    }
}

#[derive(Default)]
struct Totals {
    mounts: AtomicU64,
    umounts: AtomicU64,
    failures: AtomicU64,
}

/// Mount and unmount state, changed under one lock.
struct Admin {
    /// The generation each slot was last used with (0: never).
    generations: [u16; MAX_MOUNTS + 1],
    /// The options FUSE_INIT settled on, once it happened.
    negotiated: Option<FsOptions>,
}

/// File systems mounted at run time under one tree: a FUSE `FileSystem` whose root is the
/// table's own directory tree, with each mount in a slot that numbers its inodes (see
/// `inode.rs`). Requests for an inode of a mount that is gone get `ESTALE`.
pub struct MountTable {
    slots: Box<[ArcSwapOption<Mounted>]>,
    pub(super) tree: RwLock<PseudoTree>,
    admin: Mutex<Admin>,
    pub(super) pseudo_counters: MountCounters,
    totals: Totals,
    pub(super) created: SystemTime,
    started: Instant,
}

impl Default for MountTable {
    fn default() -> Self {
        MountTable {
            slots: (0..=MAX_MOUNTS).map(|_| ArcSwapOption::empty()).collect(),
            tree: RwLock::new(PseudoTree::default()),
            admin: Mutex::new(Admin {
                generations: [0; MAX_MOUNTS + 1],
                negotiated: None,
            }),
            pseudo_counters: MountCounters::default(),
            totals: Totals::default(),
            created: SystemTime::now(),
            started: Instant::now(),
        }
    }
}

impl MountTable {
    /// An empty table: only the root directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn admin(&self) -> MutexGuard<'_, Admin> {
        // Every update leaves the state consistent before anything can panic.
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn tree(&self) -> RwLockReadGuard<'_, PseudoTree> {
        self.tree.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Mounts `fs` at `mountpoint` in the lowest free slot, keeping `keep` open as long as
    /// `fs` lives. If the guest already initialised the connection, `fs` is initialised with
    /// the options it settled on first. Nothing changes on an error.
    pub fn mount(
        &self,
        mountpoint: &str,
        label: MountLabel,
        fs: Box<dyn Backend>,
        keep: Vec<OwnedFd>,
    ) -> Result<SlotId, MountError> {
        let result = self.try_mount(mountpoint, label, fs, keep);
        let counter = match result {
            Ok(_) => &self.totals.mounts,
            Err(_) => &self.totals.failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn try_mount(
        &self,
        mountpoint: &str,
        label: MountLabel,
        fs: Box<dyn Backend>,
        keep: Vec<OwnedFd>,
    ) -> Result<SlotId, MountError> {
        let at = Mountpoint::parse(mountpoint)?;
        let mut admin = self.admin();
        self.tree().check_attach(&at)?;
        let index = (1..=MAX_MOUNTS)
            .find(|&i| self.slots[i].load().is_none())
            .ok_or(MountError::NoFreeSlot(MAX_MOUNTS))?;
        let slot = SlotId {
            index: index as u8,
            generation: SlotId::next_generation(admin.generations[index]),
        };
        if let Some(opts) = admin.negotiated {
            fs.init(opts).map_err(|e| {
                MountError::Internal(format!("{}: cannot initialise: {e}", at.display()))
            })?;
        }
        let mut tree = self.tree.write().unwrap_or_else(|e| e.into_inner());
        tree.attach(&at, slot.index)?;
        let parent = tree.parent_of(&at).unwrap_or(ROOT);
        drop(tree);
        admin.generations[index] = slot.generation;
        self.install(slot, at, parent, label, fs, keep);
        Ok(slot)
    }

    fn install(
        &self,
        slot: SlotId,
        mountpoint: Mountpoint,
        parent: u64,
        label: MountLabel,
        fs: Box<dyn Backend>,
        keep: Vec<OwnedFd>,
    ) {
        self.slots[usize::from(slot.index)].store(Some(Arc::new(Mounted {
            slot,
            mountpoint,
            parent,
            label,
            fs,
            counters: MountCounters::default(),
            since: SystemTime::now(),
            _keep: keep,
        })));
    }

    /// Rebuilds in this table, which must be new, the table `journal` recorded: the table's
    /// directories get the numbers they had and each mount still in place goes back into its
    /// slot, opened by `open` from its spec (and, for an image, the manifest it was opened
    /// from). A file system whose inode numbers are a pure function of its source (an image)
    /// keeps its generation, so every inode number the guest holds names the same file. One
    /// whose numbers are not (a pass-through directory numbers inodes in lookup order) comes
    /// back in the slot's next generation, so the guest's old numbers get `ESTALE`, never
    /// another file. A mount `open` cannot bring back is left unmounted (its inodes get
    /// `ESTALE`); record that with [`Journal::unmounted`].
    pub fn restore(
        &self,
        journal: &Journal,
        mut open: impl FnMut(&[String; 3], Option<Digest>) -> Result<Reopened, MountError>,
    ) -> Result<Restored, MountError> {
        let mut admin = self.admin();
        if self.live().next().is_some() || self.tree().next_ino() != ROOT + 1 {
            return Err(MountError::Internal("restoring into a table in use".into()));
        }
        let mut restored = Restored::default();
        // Which slot each mount point of the history holds at each step.
        let mut occupied: Vec<(String, u8)> = Vec::new();
        for (event, live) in journal.events().iter().zip(journal.live()) {
            let mut tree = self.tree.write().unwrap_or_else(|e| e.into_inner());
            let (mountpoint, slot, spec, manifest) = match event {
                Event::Unmounted { mountpoint } => {
                    tree.detach(&Mountpoint::parse(mountpoint)?)?;
                    occupied.retain(|(m, _)| m != mountpoint);
                    continue;
                }
                Event::Restored => {
                    for index in 1..=MAX_MOUNTS {
                        if !occupied.iter().any(|&(_, i)| usize::from(i) == index) {
                            let g = &mut admin.generations[index];
                            *g = SlotId::next_generation(*g);
                        }
                    }
                    continue;
                }
                Event::Mounted {
                    mountpoint,
                    slot,
                    spec,
                    manifest,
                } => (mountpoint, *slot, spec, manifest),
            };
            let at = Mountpoint::parse(mountpoint)?;
            if slot.index == 0 || slot.generation == 0 {
                return Err(MountError::Internal(format!("{mountpoint}: slot {slot:?}")));
            }
            tree.attach(&at, slot.index)?;
            occupied.push((mountpoint.clone(), slot.index));
            let parent = tree.parent_of(&at).unwrap_or(ROOT);
            drop(tree);
            admin.generations[usize::from(slot.index)] = slot.generation;
            if !live {
                continue;
            }
            let manifest = manifest
                .as_deref()
                .map(Digest::parse)
                .transpose()
                .map_err(|e| MountError::Internal(format!("{mountpoint}: manifest: {e}")));
            let again = match manifest.and_then(|m| open(spec, m)) {
                Ok(again) => again,
                Err(e) => {
                    let mut tree = self.tree.write().unwrap_or_else(|e| e.into_inner());
                    tree.detach(&at)?;
                    occupied.retain(|(m, _)| m != mountpoint);
                    restored.lost.push((mountpoint.clone(), e));
                    continue;
                }
            };
            let slot = match again.stable_inodes {
                true => slot,
                false => {
                    let moved = SlotId {
                        index: slot.index,
                        generation: SlotId::next_generation(slot.generation),
                    };
                    admin.generations[usize::from(slot.index)] = moved.generation;
                    restored.renumbered.push((mountpoint.clone(), moved));
                    moved
                }
            };
            if let Some(opts) = admin.negotiated {
                again
                    .fs
                    .init(opts)
                    .map_err(|e| MountError::Internal(format!("{mountpoint}: {e}")))?;
            }
            self.install(slot, at, parent, again.label, again.fs, again.keep);
        }
        Ok(restored)
    }

    /// Unmounts what is mounted at `mountpoint`. Requests already running on it finish; later
    /// requests for its inodes get `ESTALE`. The file system is destroyed once the last
    /// running request is done with it.
    pub fn umount(&self, mountpoint: &str) -> Result<(), MountError> {
        let at = Mountpoint::parse(mountpoint)?;
        let _admin = self.admin();
        let index = self
            .tree
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .detach(&at)?;
        if let Some(gone) = self.slots[usize::from(index)].swap(None) {
            gone.fs.destroy();
        }
        self.totals.umounts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The live mounts, by mount point.
    pub fn mounts(&self) -> Vec<MountInfo> {
        let mut all: Vec<_> = self
            .live()
            .map(|m| MountInfo {
                mountpoint: m.mountpoint.display(),
                slot: m.slot,
                label: m.label.clone(),
                since: m.since,
            })
            .collect();
        all.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        all
    }

    fn live(&self) -> impl Iterator<Item = Arc<Mounted>> + '_ {
        self.slots.iter().filter_map(|s| s.load_full())
    }

    /// Everything counted so far; `chunk_store` describes the store the images share.
    pub fn metrics(&self, chunk_store: ChunkStoreMetrics) -> MetricsSnapshot {
        let pseudo = {
            let (ops, bytes_read, bytes_written) = self.pseudo_counters.snapshot();
            MountMetrics {
                mountpoint: "/".into(),
                fs_type: "pseudo".into(),
                source: String::new(),
                slot: 0,
                generation: 0,
                ops,
                bytes_read,
                bytes_written,
                image: None,
            }
        };
        let mut mounts: Vec<MountMetrics> = self
            .live()
            .map(|m| {
                let (ops, bytes_read, bytes_written) = m.counters.snapshot();
                MountMetrics {
                    mountpoint: m.mountpoint.display(),
                    fs_type: m.label.fs_type.clone(),
                    source: m.label.source.clone(),
                    slot: m.slot.index,
                    generation: m.slot.generation,
                    ops,
                    bytes_read,
                    bytes_written,
                    image: m.fs.image_metrics(),
                }
            })
            .collect();
        mounts.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        MetricsSnapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            mounts_total: self.totals.mounts.load(Ordering::Relaxed),
            umounts_total: self.totals.umounts.load(Ordering::Relaxed),
            mount_failures_total: self.totals.failures.load(Ordering::Relaxed),
            chunk_store,
            pseudo,
            mounts,
        }
    }

    /// Whether a request with `opcode` on `ino` is answered without waiting on I/O: the
    /// table's own directories and stale inodes always are; otherwise the mount says.
    pub fn is_quick(&self, opcode: u32, ino: u64, read: Option<(u64, u32)>) -> bool {
        match decode(ino) {
            Decoded::Mounted { slot, inode } => self.slots[usize::from(slot.index)]
                .load()
                .as_ref()
                .filter(|m| m.slot == slot)
                .is_none_or(|m| m.fs.is_quick(opcode, inode, read)),
            Decoded::Pseudo(_) | Decoded::Invalid => true,
        }
    }

    /// The mount currently in slot `index`.
    pub(super) fn in_slot(&self, index: u8) -> Option<Arc<Mounted>> {
        self.slots[usize::from(index)].load_full()
    }

    /// Where a request about `ino` goes: `ESTALE` for an inode of a mount that is gone (or of
    /// a table directory that was replaced), `ENOENT` for a number never handed out.
    pub(super) fn route(&self, ino: u64) -> io::Result<Target> {
        match decode(ino) {
            Decoded::Pseudo(p) if self.tree().is_dir(p) => Ok(Target::Pseudo(p)),
            Decoded::Pseudo(_) => Err(io::Error::from_raw_os_error(libc::ESTALE)),
            Decoded::Mounted { slot, inode } => {
                let held = self.slots[usize::from(slot.index)].load();
                if held.as_ref().is_some_and(|m| m.slot == slot) {
                    Ok(Target::Mount(MountRef(held), inode))
                } else {
                    Err(io::Error::from_raw_os_error(libc::ESTALE))
                }
            }
            Decoded::Invalid => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    /// Records that FUSE_INIT settled on `opts` and initialises every mounted file system with
    /// them (a failure is logged: the others keep serving). A second INIT (the guest
    /// rebooted) first makes them forget the first session's state: its inodes mean nothing
    /// to the new guest kernel.
    pub(super) fn initialised(&self, opts: FsOptions) {
        let mut admin = self.admin();
        let again = admin.negotiated.replace(opts).is_some();
        for m in self.live() {
            if again {
                m.fs.destroy();
            }
            if let Err(e) = m.fs.init(opts) {
                log::error!("{}: cannot initialise: {e}", m.mountpoint.display());
            }
        }
    }

    /// The guest ended the session (FUSE_DESTROY): every mounted file system forgets its
    /// per-session state.
    pub(super) fn destroyed(&self) {
        let mut admin = self.admin();
        admin.negotiated = None;
        for m in self.live() {
            m.fs.destroy();
        }
    }

    /// The entry of a table directory or of what `child` leads to.
    pub(super) fn child_entry(&self, ctx: &Context, child: Child) -> io::Result<Entry> {
        match child {
            Child::Dir(ino) => Ok(self.pseudo_entry(ino)),
            Child::Mount(index) => match self.in_slot(index) {
                Some(m) => m.root_entry(ctx),
                None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            },
        }
    }

    /// The entry of table directory `ino`.
    pub(super) fn pseudo_entry(&self, ino: u64) -> Entry {
        Entry {
            inode: ino,
            generation: 0,
            attr: self.pseudo_attr(ino),
            attr_flags: 0,
            attr_timeout: PSEUDO_TIMEOUT,
            entry_timeout: PSEUDO_TIMEOUT,
        }
    }

    /// Attributes of table directory `ino`: root's, mode 0755, created with the table.
    pub(super) fn pseudo_attr(&self, ino: u64) -> stat64 {
        let since = self
            .created
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let nlink = 2 + self.tree().subdirs(ino);
        stat64::from(Attr {
            ino,
            size: 4096,
            blocks: 8,
            atime: since.as_secs(),
            mtime: since.as_secs(),
            ctime: since.as_secs(),
            atimensec: since.subsec_nanos(),
            mtimensec: since.subsec_nanos(),
            ctimensec: since.subsec_nanos(),
            mode: libc::S_IFDIR | 0o755,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl PseudoTree {
    /// The directory holding the mount point `at`, once attached.
    fn parent_of(&self, at: &Mountpoint) -> Option<u64> {
        let names = at.names();
        let mut dir = ROOT;
        for name in &names[..names.len() - 1] {
            match self.lookup(dir, name)? {
                Child::Dir(d) => dir = d,
                Child::Mount(_) => return None,
            }
        }
        Some(dir)
    }
}
