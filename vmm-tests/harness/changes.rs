//! A list of file system changes, each written twice: as the guest shell command that makes it
//! through a mount (busybox plus the initramfs's `pfs-xattr` and `pfs-as`), and as the same
//! change made directly on a host directory with std, rustix and xattr. Applying the list on
//! the host gives the tree a correct pass-through must leave behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, lchown, symlink, FileExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{FallocateFlags, FileType, Mode, Timespec, Timestamps, CWD};

/// One change; paths are relative to the served root.
#[derive(Debug, Clone)]
pub enum Change {
    /// mkdir (mode 0777 & ~umask 022).
    Mkdir(&'static str),
    /// Create or truncate, then write this text (a new file gets 0666 & ~umask 022).
    Write(&'static str, &'static str),
    /// Append this text (O_APPEND).
    Append(&'static str, &'static str),
    /// Write the lines 1..=N as seq(1) prints them (a few hundred KiB: many WRITE requests).
    Seq(&'static str, u32),
    /// Overwrite bytes at an offset, keeping the rest (dd conv=notrunc).
    Overwrite(&'static str, u64, &'static str),
    /// rename(2): from, to (to may exist: it is replaced).
    Rename(&'static str, &'static str),
    /// chmod, full permission bits (setuid, setgid, sticky included).
    Chmod(&'static str, u32),
    /// chown uid:gid, following a symlink.
    Chown(&'static str, u32, u32),
    /// chown -h uid:gid: the link itself.
    Lchown(&'static str, u32, u32),
    /// Hard link: existing, new.
    Link(&'static str, &'static str),
    /// Symbolic link: target, new path.
    Symlink(&'static str, &'static str),
    /// truncate -s SIZE (shrink or grow).
    Truncate(&'static str, u64),
    /// mkfifo -m 644.
    Mkfifo(&'static str),
    /// mknod -m 644 PATH c|b MAJOR MINOR.
    Mknod(&'static str, char, u32, u32),
    /// Set an extended attribute (create or replace).
    SetXattr(&'static str, &'static str, &'static str),
    /// Remove an extended attribute.
    RmXattr(&'static str, &'static str),
    /// fallocate -l LEN on a new file.
    Fallocate(&'static str, u64),
    /// fsync(2) the file or directory (busybox `sync FILE`): nothing visible changes.
    Fsync(&'static str),
    /// fdatasync(2) (busybox `sync -d FILE`).
    Fdatasync(&'static str),
    /// touch -t STAMP (UTC): access and modification time; the stamp's seconds since the
    /// epoch (both, since busybox wants the one and the host the other).
    Touch(&'static str, &'static str, i64),
    /// rm.
    Remove(&'static str),
    /// rm -r.
    RemoveTree(&'static str),
    /// rmdir.
    Rmdir(&'static str),
    /// The change made by that uid and gid (no supplementary groups in the guest); on the
    /// host by a thread with those effective ids.
    As(u32, u32, Box<Change>),
    /// The change tried by that uid and gid, which must be refused (it changes nothing).
    Refused(u32, u32, Box<Change>),
}

/// `s` in single quotes for sh.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `text` as a printf format that prints it verbatim.
fn printf_format(text: &str) -> String {
    let escaped = text
        .replace('\\', r"\\")
        .replace('%', "%%")
        .replace('\n', r"\n");
    quoted(&escaped)
}

fn at(p: &str) -> String {
    format!("\"$R/{p}\"")
}

impl Change {
    /// The guest command (busybox sh; `$R` is the mount's path, umask 022).
    pub fn shell(&self) -> String {
        use Change::*;
        match self {
            Mkdir(p) => format!("mkdir {}", at(p)),
            Write(p, t) => format!("printf {} > {}", printf_format(t), at(p)),
            Append(p, t) => format!("printf {} >> {}", printf_format(t), at(p)),
            Seq(p, n) => format!("seq 1 {n} > {}", at(p)),
            Overwrite(p, off, t) => format!(
                "printf {} | dd of={} bs=1 seek={off} conv=notrunc 2>/dev/null",
                printf_format(t),
                at(p)
            ),
            Rename(a, b) => format!("mv {} {}", at(a), at(b)),
            Chmod(p, m) => format!("chmod {m:o} {}", at(p)),
            Chown(p, u, g) => format!("chown {u}:{g} {}", at(p)),
            Lchown(p, u, g) => format!("chown -h {u}:{g} {}", at(p)),
            Link(a, b) => format!("ln {} {}", at(a), at(b)),
            Symlink(t, p) => format!("ln -s {} {}", quoted(t), at(p)),
            Truncate(p, n) => format!("truncate -s {n} {}", at(p)),
            Mkfifo(p) => format!("mkfifo -m 644 {}", at(p)),
            Mknod(p, kind, major, minor) => {
                format!("mknod -m 644 {} {kind} {major} {minor}", at(p))
            }
            SetXattr(p, n, v) => format!("pfs-xattr set {} {n} {}", at(p), quoted(v)),
            RmXattr(p, n) => format!("pfs-xattr rm {} {n}", at(p)),
            Fallocate(p, n) => format!("fallocate -l {n} {}", at(p)),
            Fsync(p) => format!("sync {}", at(p)),
            Fdatasync(p) => format!("sync -d {}", at(p)),
            Touch(p, stamp, _) => format!("TZ=UTC touch -t {stamp} {}", at(p)),
            Remove(p) => format!("rm {}", at(p)),
            RemoveTree(p) => format!("rm -r {}", at(p)),
            Rmdir(p) => format!("rmdir {}", at(p)),
            As(u, g, c) => format!("pfs-as {u} {g} sh -c {}", quoted(&c.shell())),
            Refused(u, g, c) => {
                format!("! pfs-as {u} {g} sh -c {} 2>/dev/null", quoted(&c.shell()))
            }
        }
    }

    /// Makes the same change under `root` on the host (as root).
    pub fn apply(&self, root: &Path) {
        use Change::*;
        let r = |p: &str| root.join(p);
        let created = |p: &Path, mode: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        };
        match self {
            Mkdir(p) => {
                fs::create_dir(r(p)).unwrap();
                // A setgid parent passes its bit on; umask 022 clears the rest.
                let inherited = fs::metadata(r(p)).unwrap().permissions().mode() & 0o2000;
                created(&r(p), 0o755 | inherited);
            }
            Write(p, t) => write_file(&r(p), t.as_bytes()),
            Append(p, t) => {
                let mut f = fs::OpenOptions::new().append(true).open(r(p)).unwrap();
                f.write_all(t.as_bytes()).unwrap();
            }
            Seq(p, n) => {
                let text: String = (1..=*n).map(|i| format!("{i}\n")).collect();
                write_file(&r(p), text.as_bytes());
            }
            Overwrite(p, off, t) => {
                let f = fs::OpenOptions::new().write(true).open(r(p)).unwrap();
                f.write_all_at(t.as_bytes(), *off).unwrap();
            }
            Rename(a, b) => fs::rename(r(a), r(b)).unwrap(),
            Chmod(p, m) => fs::set_permissions(r(p), fs::Permissions::from_mode(*m)).unwrap(),
            Chown(p, u, g) => chown(r(p), Some(*u), Some(*g)).unwrap(),
            Lchown(p, u, g) => lchown(r(p), Some(*u), Some(*g)).unwrap(),
            Link(a, b) => fs::hard_link(r(a), r(b)).unwrap(),
            Symlink(t, p) => symlink(t, r(p)).unwrap(),
            Truncate(p, n) => fs::OpenOptions::new()
                .write(true)
                .open(r(p))
                .unwrap()
                .set_len(*n)
                .unwrap(),
            Mkfifo(p) => {
                rustix::fs::mknodat(CWD, r(p), FileType::Fifo, Mode::from(0o644), 0).unwrap();
                created(&r(p), 0o644);
            }
            Mknod(p, kind, major, minor) => {
                let t = match kind {
                    'c' => FileType::CharacterDevice,
                    'b' => FileType::BlockDevice,
                    _ => panic!("mknod type {kind}"),
                };
                let dev = rustix::fs::makedev(*major, *minor);
                rustix::fs::mknodat(CWD, r(p), t, Mode::from(0o644), dev).unwrap();
                created(&r(p), 0o644);
            }
            SetXattr(p, n, v) => xattr::set(r(p), n, v.as_bytes()).unwrap(),
            RmXattr(p, n) => xattr::remove(r(p), n).unwrap(),
            Fallocate(p, n) => {
                let f = fs::File::create(r(p)).unwrap();
                rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, *n).unwrap();
                created(&r(p), 0o644);
            }
            Fsync(_) | Fdatasync(_) => {}
            Touch(p, _, secs) => {
                let t = Timespec {
                    tv_sec: *secs,
                    tv_nsec: 0,
                };
                let ts = Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rustix::fs::utimensat(CWD, r(p), &ts, rustix::fs::AtFlags::empty()).unwrap();
            }
            Remove(p) => fs::remove_file(r(p)).unwrap(),
            RemoveTree(p) => fs::remove_dir_all(r(p)).unwrap(),
            Rmdir(p) => fs::remove_dir(r(p)).unwrap(),
            As(u, g, c) => {
                let (u, g, c, root) = (*u, *g, (**c).clone(), root.to_path_buf());
                std::thread::spawn(move || {
                    become_on_this_thread(u, g);
                    c.apply(&root);
                })
                .join()
                .unwrap_or_else(|_| panic!("the change as {u}:{g} failed"));
            }
            Refused(..) => {}
        }
    }
}

/// Makes this thread (only: raw system calls, not glibc's process-wide wrappers) act as
/// `uid` and `gid`: effective and file-system ids change, which also empties the thread's
/// effective capabilities, as for the unprivileged guest user. The thread must end after.
fn become_on_this_thread(uid: u32, gid: u32) {
    let keep = libc::c_long::from(-1i32);
    // SAFETY: set{res}gid/uid with unchanged real and saved ids touch no memory; the return
    // values are checked.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_setresgid, keep, gid, keep), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, keep, uid, keep), 0);
    }
}

/// Creates or truncates `path` and writes `data`, as a shell redirection does (mode 0644 for
/// a new file, under umask 022).
fn write_file(path: &Path, data: &[u8]) {
    let new = !path.exists();
    fs::write(path, data).unwrap();
    if new {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The guest script that makes `changes` under `mount` in order, stopping at the first that
/// fails with `STEP FAILED: N` (N indexes `changes`).
pub fn script(mount: &str, changes: &[Change]) -> String {
    let mut s = format!("export R={mount}\numask 022\ncd /\n");
    for (i, c) in changes.iter().enumerate() {
        s.push_str(&format!(
            "{} || {{ echo \"STEP FAILED: {i}\"; exit 1; }}\n",
            c.shell()
        ));
    }
    s
}

/// The change a `STEP FAILED: N` line in `output` names, for failure messages.
pub fn failed_step<'a>(output: &str, changes: &'a [Change]) -> Option<(usize, &'a Change)> {
    let n: usize = output
        .lines()
        .find_map(|l| l.strip_prefix("STEP FAILED: "))?
        .trim()
        .parse()
        .ok()?;
    changes.get(n).map(|c| (n, c))
}
