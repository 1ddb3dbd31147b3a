//! Real Linux guests under QEMU (`-accel tcg`) talking to a vhost-user-fs daemon: guest
//! assets from `scripts/`, one VM at a time, output framed by markers, hang detection by a
//! generous deadline (never a timing assertion).
#![allow(dead_code)]

pub mod api;
pub mod changes;
pub mod cpio;
pub mod daemon;
pub mod gate;
pub mod image;
pub mod listing;
pub mod tree;
pub mod virtiofsd;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a guest may run before we call it hung (TCG on a busy 2-core machine is slow).
pub const VM_DEADLINE: Duration = Duration::from_secs(600);
/// Longest a daemon may take to start or to exit after its VMM quit.
pub const DAEMON_DEADLINE: Duration = Duration::from_secs(60);

/// Kernel and base initramfs, built once by the scripts.
pub struct GuestAssets {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn run_script(name: &str) -> PathBuf {
    let out = Command::new(script(name))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(out.status.success(), "scripts/{name} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(text.lines().last().expect("script printed a path").trim())
}

/// The guest kernel and initramfs (fetched and built on first use, then cached).
pub fn assets() -> &'static GuestAssets {
    static ASSETS: OnceLock<GuestAssets> = OnceLock::new();
    ASSETS.get_or_init(|| GuestAssets {
        kernel: run_script("guest-kernel.sh").join("vmlinuz"),
        initramfs: run_script("guest-initramfs.sh"),
    })
}

/// Serializes guests: the machine has two cores, and parallel TCG guests only slow each other.
pub fn vm_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One guest run.
pub struct Vm<'a> {
    /// vhost-user socket of the daemon (none: the guest has no virtio-fs device).
    pub socket: Option<&'a Path>,
    /// Mount tag.
    pub tag: &'a str,
    /// Shell script the guest runs (busybox sh, the mount at /mnt) or, with `root`, the
    /// root file system's /bin/sh after switch_root.
    pub script: &'a str,
    /// Boot into the virtio-fs mount as root file system.
    pub root: bool,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// `num-request-queues` of the vhost-user-fs-pci device.
    pub request_queues: u32,
    /// A raw disk image attached as the guest's /dev/vda (virtio-blk).
    pub disk: Option<&'a Path>,
    /// With `root`: after each run of the script, reset the machine (`system_reset` on
    /// QEMU's monitor) this many times; each boot runs the script again.
    pub resets: usize,
}

impl<'a> Vm<'a> {
    pub fn new(socket: &'a Path, tag: &'a str, script: &'a str) -> Self {
        Vm {
            socket: Some(socket),
            tag,
            script,
            root: false,
            mem_mib: 512,
            cpus: 2,
            request_queues: 1,
            disk: None,
            resets: 0,
        }
    }

    /// A guest with no virtio-fs device: its script runs from the initramfs.
    pub fn without_fs(script: &'a str) -> Self {
        Vm {
            socket: None,
            ..Vm::new(Path::new(""), "", script)
        }
    }
}

/// What the guest printed between its markers, and its script's exit status.
#[derive(Debug)]
pub struct VmOutput {
    pub output: String,
    pub rc: i32,
    pub console: String,
    pub elapsed: Duration,
}

/// The base initramfs, padded to 4 bytes, followed by a cpio holding `/test.sh`.
fn initrd_with(script: &str, root: bool, resets: bool, dir: &Path) -> PathBuf {
    let mut data = std::fs::read(&assets().initramfs).unwrap();
    while !data.len().is_multiple_of(4) {
        data.push(0);
    }
    let body = if root {
        // After switch_root nothing of the initramfs is left: end the run here (power off,
        // or wait for the host to reset the machine).
        let end = if resets {
            "sleep 600"
        } else {
            "echo o > /proc/sysrq-trigger\nsleep 60"
        };
        format!("{script}\necho \"@@PFS-END rc=$?@@\"\nsync\n{end}\n")
    } else {
        script.to_string()
    };
    data.extend(cpio::archive(&[cpio::CpioFile {
        name: "test.sh",
        mode: 0o755,
        data: body.as_bytes(),
    }]));
    let path = dir.join("initrd.img");
    std::fs::write(&path, data).unwrap();
    path
}

/// Boots a guest, runs its script, and returns what it printed. Panics if it hangs.
pub fn run_vm(vm: &Vm<'_>) -> VmOutput {
    run_vm_boots(vm).remove(0)
}

/// Boots a guest and, with `vm.resets`, resets it after each run of its script; returns what
/// each boot printed. Panics if it hangs.
pub fn run_vm_boots(vm: &Vm<'_>) -> Vec<VmOutput> {
    assert!(
        vm.resets == 0 || vm.root,
        "resets need a root file system to boot"
    );
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    let initrd = initrd_with(vm.script, vm.root, vm.resets > 0, dir.path());
    let mut append = "console=ttyS0 quiet loglevel=3 panic=-1".to_string();
    if vm.socket.is_some() {
        append.push_str(&format!(" pfs.tag={}", vm.tag));
    }
    if vm.root {
        append.push_str(" pfs.root=1");
    }
    let mem = format!("memory-backend-memfd,id=mem,size={}M,share=on", vm.mem_mib);
    let mut devices: Vec<String> = Vec::new();
    if let Some(socket) = vm.socket {
        devices.push("-chardev".into());
        devices.push(format!("socket,id=char0,path={}", socket.display()));
        devices.push("-device".into());
        devices.push(format!(
            "vhost-user-fs-pci,chardev=char0,tag={},queue-size=1024,num-request-queues={}",
            vm.tag, vm.request_queues
        ));
    }
    if let Some(disk) = vm.disk {
        devices.push("-drive".into());
        devices.push(format!(
            "file={},if=none,id=disk0,format=raw",
            disk.display()
        ));
        devices.push("-device".into());
        devices.push("virtio-blk-pci,drive=disk0".into());
    }
    let monitor = dir.path().join("monitor.sock");
    let monitor_arg = match vm.resets {
        0 => "none".to_string(),
        _ => format!("unix:{},server=on,wait=off", monitor.display()),
    };
    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-nodefaults", "-no-user-config"]);
    if vm.resets == 0 {
        // With -no-reboot even a monitor's system_reset ends QEMU.
        qemu.arg("-no-reboot");
    }
    let mut child = qemu
        .args([
            "-m",
            &format!("{}M", vm.mem_mib),
            "-smp",
            &vm.cpus.to_string(),
        ])
        .args(["-object", &mem, "-numa", "node,memdev=mem"])
        .args(&devices)
        .args(["-kernel", assets.kernel.to_str().unwrap()])
        .args(["-initrd", initrd.to_str().unwrap(), "-append", &append])
        .args([
            "-display",
            "none",
            "-monitor",
            &monitor_arg,
            "-serial",
            "stdio",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let console = std::sync::Arc::new(Mutex::new(Vec::new()));
    let out_reader = {
        let console = console.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                console.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let text =
        |console: &Mutex<Vec<u8>>| String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    let mut resets_sent = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if vm.resets > 0 {
            let ended = text(&console).matches("@@PFS-END rc=").count();
            if ended > resets_sent {
                let command = if resets_sent < vm.resets {
                    "system_reset\n"
                } else {
                    "quit\n"
                };
                let mut m = std::os::unix::net::UnixStream::connect(&monitor)
                    .expect("QEMU's monitor socket");
                std::io::Write::write_all(&mut m, command.as_bytes()).unwrap();
                // The monitor acts on the line before it notices the hang-up.
                thread::sleep(Duration::from_millis(200));
                resets_sent += 1;
            }
        }
        if start.elapsed() > VM_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            out_reader.join().unwrap();
            panic!(
                "guest hung (no end after {VM_DEADLINE:?}); console:\n{}",
                text(&console)
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    let elapsed = start.elapsed();
    out_reader.join().unwrap();
    let console = text(&console);
    let qemu_err = err_reader.join().unwrap();
    eprintln!("[vm] guest run took {:.1} s", elapsed.as_secs_f64());
    assert!(
        status.success(),
        "qemu failed ({status}): {qemu_err}\nconsole:\n{console}"
    );
    let console = console.replace("\r\n", "\n");
    if vm.resets == 0 {
        return vec![parse_console(console, elapsed)];
    }
    // Each boot's part of the console starts at its begin marker.
    let starts: Vec<usize> = console
        .match_indices("@@PFS-BEGIN@@\n")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), vm.resets + 1, "boots; console:\n{console}");
    let ends = starts.iter().skip(1).copied().chain([console.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&a, b)| parse_console(console[a..b].to_string(), elapsed))
        .collect()
}

fn parse_console(console: String, elapsed: Duration) -> VmOutput {
    let console = console.replace("\r\n", "\n");
    let begin = console
        .find("@@PFS-BEGIN@@\n")
        .unwrap_or_else(|| panic!("guest never started its script; console:\n{console}"));
    let body = &console[begin + "@@PFS-BEGIN@@\n".len()..];
    let end = body
        .find("@@PFS-END rc=")
        .unwrap_or_else(|| panic!("guest script never finished; console:\n{console}"));
    let rc_text = &body[end + "@@PFS-END rc=".len()..];
    let rc = rc_text[..rc_text.find("@@").unwrap()].parse().unwrap();
    VmOutput {
        output: body[..end].to_string(),
        rc,
        console: console.clone(),
        elapsed,
    }
}

/// The last `lines` lines of a guest console, for failure messages (a full listing is long).
pub fn tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A Debian bookworm minbase tree with `extra` packages installed (scripts/debootstrap-tree.sh,
/// created once and cached).
pub fn debian_tree_with(extra: &[&str]) -> PathBuf {
    let out = Command::new(script("debootstrap-tree.sh"))
        .arg("bookworm")
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/debootstrap-tree.sh");
    assert!(
        out.status.success(),
        "debootstrap-tree.sh bookworm {extra:?} failed"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A real Debian root file system (debootstrap bookworm minbase, cached by
/// scripts/debootstrap-tree.sh); `PFS_ROOTFS` overrides it.
pub fn debian_rootfs() -> PathBuf {
    match std::env::var_os("PFS_ROOTFS") {
        Some(dir) => PathBuf::from(dir),
        None => debian_tree_with(&[]),
    }
}
