//! The vhost-user control path as a VMM drives it: connect, negotiate, share guest RAM, set
//! up the hiprio queue and the request queues, enable them, and stop them at the end. Two
//! profiles replay the message order of QEMU and of cloud-hypervisor; the latter shares an
//! inflight-tracking area with the back end (INFLIGHT_SHMFD) when offered, kept across
//! reconnects so that a new back end can answer what a dead one had taken.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use serde::Serialize;
use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserInflight, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserVirtioFeatures};
use vhost::VhostBackend;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{FrontendError, Result};
use crate::memory::GuestRam;
use crate::virtq::SplitQueue;

/// VIRTIO_F_VERSION_1: the only device feature the driver needs.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Whose message sequence to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// QEMU's hw/virtio/vhost-user.c + vhost.c (`vhost-user-fs-pci`).
    Qemu,
    /// cloud-hypervisor's virtio-devices vhost_user (`--fs`).
    CloudHypervisor,
}

impl Profile {
    /// Protocol features the VMM would accept (then intersected with the back end's offer).
    fn wanted(self) -> VhostUserProtocolFeatures {
        use VhostUserProtocolFeatures as P;
        match self {
            // QEMU's mask, minus what needs a channel this front end does not implement
            // (BACKEND_REQ, HOST_NOTIFIER, PAGEFAULT, STATUS) and CONFIG (vhost-user-fs has
            // no config space from the back end).
            Profile::Qemu => P::MQ | P::LOG_SHMFD | P::REPLY_ACK | P::CONFIGURE_MEM_SLOTS,
            Profile::CloudHypervisor => {
                P::MQ
                    | P::CONFIGURE_MEM_SLOTS
                    | P::REPLY_ACK
                    | P::INFLIGHT_SHMFD
                    | P::LOG_SHMFD
                    | P::DEVICE_STATE
            }
        }
    }
}

/// How to build the device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub profile: Profile,
    /// Accept INFLIGHT_SHMFD when the profile and the back end have it (cloud-hypervisor
    /// does); off, to measure what the back end's tracking costs.
    pub inflight: bool,
    /// Request queues (the hiprio queue comes on top).
    pub request_queues: usize,
    pub queue_size: u16,
}

/// A connected, running vhost-user-fs device: RAM shared, queues enabled.
pub struct Device {
    frontend: Frontend,
    pub ram: GuestRam,
    /// Queue 0 is hiprio, then the request queues.
    pub queues: Vec<SplitQueue>,
    pub profile: Profile,
    /// Device features acked (SET_FEATURES).
    pub features: u64,
    /// Protocol features acked (SET_PROTOCOL_FEATURES).
    pub protocol: VhostUserProtocolFeatures,
    /// Protocol features the back end offered.
    pub offered_protocol: VhostUserProtocolFeatures,
    /// Every vhost-user message sent, in order.
    pub messages: Vec<String>,
    /// QEMU's "masked" call notifiers, installed at init and replaced at start.
    masked: Vec<EventFd>,
    /// The inflight-tracking area (cloud-hypervisor with INFLIGHT_SHMFD): asked for once with
    /// GET_INFLIGHT_FD, handed to every connection with SET_INFLIGHT_FD. It outlives the back
    /// ends, as the VMM holds it.
    inflight: Option<(VhostUserInflight, File)>,
    /// Whether INFLIGHT_SHMFD may be acked at all.
    accept_inflight: bool,
}

impl Device {
    /// Connects to `socket` and brings the device up the way `cfg.profile` does, in `ram`
    /// (where the queues are allocated first).
    pub fn start(socket: &Path, cfg: &DeviceConfig, mut ram: GuestRam) -> Result<Device> {
        if cfg.request_queues == 0 {
            return Err(FrontendError::Usage("at least one request queue".into()));
        }
        let nqueues = 1 + cfg.request_queues;
        let frontend = Frontend::connect(socket, nqueues as u64)
            .map_err(|e| FrontendError::vhost(format!("connect {}", socket.display()), e))?;
        let mut queues = Vec::with_capacity(nqueues);
        for _ in 0..nqueues {
            queues.push(SplitQueue::new(&mut ram, cfg.queue_size)?);
        }
        let mut dev = Device {
            frontend,
            ram,
            queues,
            profile: cfg.profile,
            accept_inflight: cfg.inflight,
            features: 0,
            protocol: VhostUserProtocolFeatures::empty(),
            offered_protocol: VhostUserProtocolFeatures::empty(),
            messages: Vec::new(),
            masked: Vec::new(),
            inflight: None,
        };
        match cfg.profile {
            Profile::Qemu => dev.qemu_start()?,
            Profile::CloudHypervisor => dev.cloud_hypervisor_setup()?,
        }
        Ok(dev)
    }

    /// Runs one vhost-user request and records its name.
    fn msg<T>(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T> {
        let name = name.into();
        let r = f(&mut self.frontend).map_err(|e| FrontendError::vhost(name.clone(), e));
        self.messages.push(name);
        r
    }

    fn negotiate_protocol(&mut self, backend_features: u64) -> Result<()> {
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Ok(());
        }
        let offered = self.msg("GET_PROTOCOL_FEATURES", |f| f.get_protocol_features())?;
        self.offered_protocol = offered;
        let mut wanted = self.profile.wanted();
        if !self.accept_inflight {
            wanted.remove(VhostUserProtocolFeatures::INFLIGHT_SHMFD);
        }
        let acked = offered & wanted;
        self.msg("SET_PROTOCOL_FEATURES", |f| f.set_protocol_features(acked))?;
        self.protocol = acked;
        Ok(())
    }

    fn check_queue_num(&mut self) -> Result<()> {
        if !self.protocol.contains(VhostUserProtocolFeatures::MQ) {
            if self.queues.len() > 2 {
                return Err(FrontendError::Unsupported(
                    "multiple request queues (no MQ protocol feature)".into(),
                ));
            }
            return Ok(());
        }
        let max = self.msg("GET_QUEUE_NUM", |f| f.get_queue_num())?;
        if (max as usize) < self.queues.len() {
            return Err(FrontendError::Unsupported(format!(
                "{} queues (it has {max})",
                self.queues.len()
            )));
        }
        Ok(())
    }

    fn ack_features(&mut self, backend: u64) -> Result<()> {
        if backend & VIRTIO_F_VERSION_1 == 0 {
            return Err(FrontendError::Unsupported("VIRTIO_F_VERSION_1".into()));
        }
        self.features =
            backend & (VIRTIO_F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits());
        Ok(())
    }

    fn share_memory(&mut self) -> Result<()> {
        let region = self.ram.region_info();
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
        {
            self.msg("ADD_MEM_REG", |f| f.add_mem_region(&region))
        } else {
            self.msg("SET_MEM_TABLE", |f| f.set_mem_table(&[region]))
        }
    }

    fn reply_ack(&self) -> bool {
        self.protocol.contains(VhostUserProtocolFeatures::REPLY_ACK)
    }

    /// QEMU: vhost_user_backend_init, vhost_dev_init (SET_OWNER, GET_FEATURES, a masked call
    /// notifier per queue), then at driver start vhost-user-fs's vuf_start: guest notifiers
    /// (SET_VRING_CALL), vhost_dev_start (SET_FEATURES, memory table, per queue NUM, BASE,
    /// ADDR, KICK), then SET_VRING_ENABLE for each queue. QEMU asks for REPLY_ACK on the
    /// memory table only.
    fn qemu_start(&mut self) -> Result<()> {
        let features = self.msg("GET_FEATURES", |f| f.get_features())?;
        self.negotiate_protocol(features)?;
        self.check_queue_num()?;
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
        {
            self.msg("GET_MAX_MEM_SLOTS", |f| f.get_max_mem_slots())?;
        }
        self.msg("SET_OWNER", |f| f.set_owner())?;
        let features = self.msg("GET_FEATURES", |f| f.get_features())?;
        self.ack_features(features)?;
        for i in 0..self.queues.len() {
            let masked = EventFd::new(EFD_NONBLOCK).map_err(|e| FrontendError::io("eventfd", e))?;
            self.msg(format!("SET_VRING_CALL {i} (masked)"), |f| {
                f.set_vring_call(i, &masked)
            })?;
            self.masked.push(masked);
        }
        // Driver start.
        for i in 0..self.queues.len() {
            let call = self.queues[i]
                .call
                .try_clone()
                .map_err(|e| FrontendError::io("dup", e))?;
            self.msg(format!("SET_VRING_CALL {i}"), |f| {
                f.set_vring_call(i, &call)
            })?;
        }
        let acked = self.features;
        self.msg("SET_FEATURES", |f| f.set_features(acked))?;
        if self.reply_ack() {
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        self.share_memory()?;
        self.frontend.set_hdr_flags(VhostUserHeaderFlag::empty());
        for i in 0..self.queues.len() {
            let (size, base) = (self.queues[i].size, self.queues[i].base());
            let config = self.queues[i].config(&self.ram);
            let kick = self.queues[i]
                .kick
                .try_clone()
                .map_err(|e| FrontendError::io("dup", e))?;
            self.msg(format!("SET_VRING_NUM {i}"), |f| f.set_vring_num(i, size))?;
            self.msg(format!("SET_VRING_BASE {i}"), |f| f.set_vring_base(i, base))?;
            self.msg(format!("SET_VRING_ADDR {i}"), |f| {
                f.set_vring_addr(i, &config)
            })?;
            self.msg(format!("SET_VRING_KICK {i}"), |f| {
                f.set_vring_kick(i, &kick)
            })?;
        }
        self.enable_all(true)?;
        // QEMU's guest sends its first request long after this; a reply-bearing message makes
        // sure the back end has processed SET_VRING_ENABLE before the first kick.
        self.msg("GET_FEATURES (sync)", |f| f.get_features())?;
        Ok(())
    }

    /// cloud-hypervisor: Fs::new negotiates (SET_OWNER, GET_FEATURES, protocol features,
    /// GET_QUEUE_NUM with MQ; NEED_REPLY on everything after when REPLY_ACK is acked), then
    /// activate's setup_vhost_user: SET_FEATURES, ADD_MEM_REG per region (or SET_MEM_TABLE),
    /// SET_VRING_NUM for every queue, with INFLIGHT_SHMFD GET_INFLIGHT_FD (first connection
    /// only) and SET_INFLIGHT_FD, then per queue ADDR, BASE, CALL, KICK, then SET_VRING_ENABLE
    /// for each queue. The same on a first connection and on every reconnect: the rings' bases
    /// are their current avail indexes.
    pub(crate) fn cloud_hypervisor_setup(&mut self) -> Result<()> {
        self.msg("SET_OWNER", |f| f.set_owner())?;
        let features = self.msg("GET_FEATURES", |f| f.get_features())?;
        self.ack_features(features)?;
        self.negotiate_protocol(features)?;
        if self.reply_ack() {
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        self.check_queue_num()?;
        let acked = self.features;
        self.msg("SET_FEATURES", |f| f.set_features(acked))?;
        self.share_memory()?;
        for i in 0..self.queues.len() {
            let size = self.queues[i].size;
            self.msg(format!("SET_VRING_NUM {i}"), |f| f.set_vring_num(i, size))?;
        }
        self.share_inflight()?;
        for i in 0..self.queues.len() {
            let base = self.queues[i].base();
            let config = self.queues[i].config(&self.ram);
            let call = self.queues[i]
                .call
                .try_clone()
                .map_err(|e| FrontendError::io("dup", e))?;
            let kick = self.queues[i]
                .kick
                .try_clone()
                .map_err(|e| FrontendError::io("dup", e))?;
            self.msg(format!("SET_VRING_ADDR {i}"), |f| {
                f.set_vring_addr(i, &config)
            })?;
            self.msg(format!("SET_VRING_BASE {i}"), |f| f.set_vring_base(i, base))?;
            self.msg(format!("SET_VRING_CALL {i}"), |f| {
                f.set_vring_call(i, &call)
            })?;
            self.msg(format!("SET_VRING_KICK {i}"), |f| {
                f.set_vring_kick(i, &kick)
            })?;
        }
        self.enable_all(true)?;
        if !self.reply_ack() {
            self.msg("GET_FEATURES (sync)", |f| f.get_features())?;
        }
        Ok(())
    }

    /// With INFLIGHT_SHMFD acked: asks the back end for the tracking area the first time (one
    /// slot per descriptor of every queue), then gives the same area back to it, as
    /// cloud-hypervisor does on each connection.
    fn share_inflight(&mut self) -> Result<()> {
        if !self
            .protocol
            .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD)
        {
            return Ok(());
        }
        if self.inflight.is_none() {
            let asked = VhostUserInflight {
                mmap_size: 0,
                mmap_offset: 0,
                num_queues: self.queues.len() as u16,
                queue_size: self.queues[0].size,
            };
            let got = self.msg("GET_INFLIGHT_FD", |f| f.get_inflight_fd(&asked))?;
            self.inflight = Some(got);
        }
        let Some((info, file)) = self.inflight.as_ref() else {
            return Ok(());
        };
        let (info, fd) = (*info, file.as_raw_fd());
        self.msg("SET_INFLIGHT_FD", |f| f.set_inflight_fd(&info, fd))
    }

    /// Whether the back end tracks requests in flight in an area this front end keeps
    /// (INFLIGHT_SHMFD acked and the area obtained): what survives a back end's death.
    pub fn inflight_shared(&self) -> bool {
        self.inflight.is_some()
            && self
                .protocol
                .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD)
    }

    fn enable_all(&mut self, on: bool) -> Result<()> {
        if self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Ok(());
        }
        for i in 0..self.queues.len() {
            self.msg(format!("SET_VRING_ENABLE {i} {}", u8::from(on)), |f| {
                f.set_vring_enable(i, on)
            })?;
        }
        Ok(())
    }

    /// Swaps in a new control connection (closing the old one), as a reconnect does. The
    /// inflight area stays.
    pub(crate) fn replace_frontend(&mut self, frontend: Frontend) {
        self.frontend = frontend;
    }

    /// Stops the device as the VMM does when the guest shuts down: QEMU fetches each ring's
    /// base (GET_VRING_BASE stops it), cloud-hypervisor disables the rings.
    pub fn stop(&mut self) -> Result<()> {
        match self.profile {
            Profile::Qemu => {
                for i in 0..self.queues.len() {
                    self.msg(format!("GET_VRING_BASE {i}"), |f| f.get_vring_base(i))?;
                }
                Ok(())
            }
            Profile::CloudHypervisor => self.enable_all(false),
        }
    }

    /// The control socket, to notice a back end that died.
    pub fn socket_fd(&self) -> i32 {
        self.frontend.as_raw_fd()
    }

    /// Whether the back end still holds its end of the control socket.
    pub fn backend_connected(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.socket_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout; the fd is the frontend's open socket.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0 || pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0
    }
}
