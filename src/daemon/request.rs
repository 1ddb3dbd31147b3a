//! One FUSE request: decode it from a descriptor chain in guest memory, answer it through the
//! fuse-backend-rs server, and return the chain to the guest's used ring exactly once.

use std::io::{Read, Write};
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader, VirtioFsWriter, Writer};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{ByteValued, Bytes, GuestMemoryAtomic, GuestMemoryMmap};

use super::inflight::Tracked;
use super::restart::{Note, NoteSender};
use super::DaemonError;

/// Guest memory as the daemon maps it (no dirty-page logging).
pub(crate) type GuestMem = GuestMemoryMmap<()>;
/// One virtqueue with its kick/call event fds, shared by the queue thread and the workers.
pub(crate) type Vring = VringRwLock<GuestMemoryAtomic<GuestMem>>;
/// A request popped from a virtqueue, holding the memory snapshot it points into.
pub(crate) type Chain = DescriptorChain<Arc<GuestMem>>;

/// The FUSE server plus the connection state it does not track itself.
pub(crate) struct FuseServer<F: FileSystem + Send + Sync> {
    server: Server<Arc<F>>,
    /// The same file system, for the queue threads' triage.
    fs: Arc<F>,
    /// Set once INIT succeeded. Before that every other request gets EIO, as libfuse does:
    /// the file system must not be reached by a guest that skipped the handshake.
    initialized: AtomicBool,
    /// Where each INIT request that succeeded is reported, for a later generation to replay.
    notes: Option<Arc<NoteSender>>,
}

/// Longest INIT request kept (today's is 64 bytes).
const MAX_INIT_LEN: usize = 1024;

impl<F: FileSystem + Send + Sync> FuseServer<F> {
    pub(crate) fn new(fs: F) -> Self {
        let fs = Arc::new(fs);
        FuseServer {
            server: Server::new(fs.clone()),
            fs,
            initialized: AtomicBool::new(false),
            notes: None,
        }
    }

    /// Reports each INIT request that succeeds to `notes`.
    pub(crate) fn with_notes(mut self, notes: Arc<NoteSender>) -> Self {
        self.notes = Some(notes);
        self
    }

    /// Puts this server in the state `request`, an INIT request an earlier process answered,
    /// left it in (protocol version, options, the file system's own init), as a guest that
    /// does not send INIT again expects. The reply is checked and dropped.
    pub(crate) fn replay_init(&self, request: &[u8]) -> Result<(), DaemonError> {
        let bad = |why: String| DaemonError::VhostUser(format!("replaying INIT: {why}"));
        let header: InHeader =
            InHeader::from_slice(request.get(..size_of::<InHeader>()).unwrap_or(&[]))
                .copied()
                .ok_or_else(|| bad("shorter than a FUSE header".into()))?;
        if header.opcode != Opcode::Init as u32 || header.len as usize != request.len() {
            return Err(bad(format!(
                "opcode {} of {} bytes",
                header.opcode, header.len
            )));
        }
        let mut input = request.to_vec();
        let reader = Reader::<()>::from_fuse_buffer(FuseBuf::new(&mut input))
            .map_err(|e| bad(e.to_string()))?;
        // The reply stays in `room`: a split writer buffers what it is given, and a success
        // is never committed (an error reply is: to `sink`, a socket, since the seccomp
        // filter allows write but not the writev an unbuffered writer makes).
        let (sink, _drain) = UnixStream::pair().map_err(|e| bad(e.to_string()))?;
        let mut room = vec![0u8; 4096];
        let capacity = room.len();
        let mut writer = FuseDevWriter::<()>::new(sink.as_raw_fd(), &mut room)
            .map_err(|e| bad(e.to_string()))?;
        // The rest of the split (no room) is not needed.
        writer.split_at(capacity).map_err(|e| bad(e.to_string()))?;
        self.server
            .handle_message(reader, Writer::from(writer), None, None)
            .map_err(|e| bad(e.to_string()))?;
        let out = room
            .get(..size_of::<OutHeader>())
            .and_then(OutHeader::from_slice)
            .copied()
            .ok_or_else(|| bad("no reply".into()))?;
        if out.error != 0 {
            return Err(bad(format!("answered errno {}", -out.error)));
        }
        self.initialized.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether INIT was answered (or replayed).
    pub(crate) fn initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    /// The file system served.
    pub(crate) fn fs(&self) -> &F {
        &self.fs
    }
}

/// Puts a popped chain on the used ring when dropped, so that every request is answered once,
/// even when serving it fails or panics.
struct Completion {
    vring: Vring,
    ring: RingId,
    tracked: Option<Tracked>,
    head: u16,
    len: u32,
}

impl Drop for Completion {
    fn drop(&mut self) {
        complete_all(
            &self.vring,
            self.ring,
            self.tracked.as_ref(),
            &[(self.head, self.len)],
        );
    }
}

/// The guest addresses of a queue's three rings when a request was popped. A driver reset
/// (front end stop, guest reboot) between pop and completion usually moves them, which tells
/// a stale completion apart from a current one.
pub(crate) type RingId = (u64, u64, u64);

/// The current [`RingId`] of a queue.
pub(crate) fn ring_id(q: &impl QueueT) -> RingId {
    (q.desc_table(), q.avail_ring(), q.used_ring())
}

/// Adds every `(head, len)` to the used ring, then signals the guest once if it asked to be
/// told (one call-eventfd write for the whole batch).
///
/// The vring write lock covers `add_used` and `needs_notification` together: with
/// EVENT_IDX, the notification decision depends on how many entries were added since the last
/// decision, so both must see the same ring state. Completions from several threads therefore
/// serialize here (for a few hundred nanoseconds), in whatever order they finish.
///
/// With an inflight region (`tracked`), each answer is recorded there around its used ring
/// entry (see [`crate::daemon::inflight`]).
pub(crate) fn complete_all(
    vring: &Vring,
    ring: RingId,
    tracked: Option<&Tracked>,
    done: &[(u16, u32)],
) {
    if done.is_empty() {
        return;
    }
    let log = tracked.and_then(Tracked::log);
    let mut state = vring.get_mut();
    if !state.get_queue().ready() || ring_id(state.get_queue()) != ring {
        if let Some(log) = log {
            for &(head, _) in done {
                log.drop_head(head);
            }
        }
        // The front end stopped the ring (GET_VRING_BASE) while these requests were in
        // flight, or has set it up anew since: the driver was reset and the answers have
        // nowhere to go.
        log::debug!(
            "dropping {} completion(s): queue stopped or reset",
            done.len()
        );
        return;
    }
    for &(head, len) in done {
        let mut publish = || match state.add_used(head, len) {
            Ok(()) => Some(state.get_queue().next_used()),
            Err(e) => {
                log::error!("cannot return descriptor {head} to the guest: {e}");
                None
            }
        };
        match log {
            Some(log) => log.complete(head, publish),
            None => {
                publish();
            }
        }
    }
    let notify = state.needs_notification().unwrap_or_else(|e| {
        log::warn!("cannot read the guest's used_event: {e}");
        true
    });
    if notify {
        if let Err(e) = state.signal_used_queue() {
            log::warn!("cannot signal the guest: {e}");
        }
    }
}

/// Serves one request on a worker thread and completes it.
pub(crate) fn serve<F: FileSystem + Send + Sync>(
    server: &FuseServer<F>,
    vring: Vring,
    ring: RingId,
    tracked: Option<Tracked>,
    mem: Arc<GuestMem>,
    chain: Chain,
) {
    let mut done = Completion {
        vring,
        ring,
        tracked,
        head: chain.head_index(),
        len: 0,
    };
    done.len = handle(server, &mem, chain);
}

/// Serves one request on the queue thread and returns its `(head, used length)` for the
/// caller to complete with its batch. A panic is caught (and answered with an empty
/// completion) so that the queue thread goes on serving.
pub(crate) fn serve_here<F: FileSystem + Send + Sync>(
    server: &FuseServer<F>,
    mem: &GuestMem,
    chain: Chain,
) -> (u16, u32) {
    let head = chain.head_index();
    let len = catch_unwind(AssertUnwindSafe(|| handle(server, mem, chain))).unwrap_or_else(|_| {
        log::error!("request in descriptor {head} panicked");
        0
    });
    (head, len)
}

/// Returns the number of bytes written into the chain's device-writable buffers.
fn handle<F: FileSystem + Send + Sync>(fuse: &FuseServer<F>, mem: &GuestMem, chain: Chain) -> u32 {
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("bad request descriptors: {e}");
            return 0;
        }
    };
    let header = match peek_header(mem, &chain).map_or_else(|| reader.clone().read_obj(), Ok) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("request too short for a FUSE header: {e}");
            return 0;
        }
    };
    // Kept to answer with an error when the server fails: cheaper than cloning the writer.
    let spare_chain = chain.clone();
    let writer = match VirtioFsWriter::new(mem, chain) {
        Ok(w) => w,
        Err(e) => {
            log::warn!("bad reply descriptors: {e}");
            return 0;
        }
    };
    let spare = || VirtioFsWriter::new(mem, spare_chain).ok();
    if let Some(errno) = refuse(fuse, &header, reader.available_bytes()) {
        log::debug!(
            "request {} (opcode {}, len {}): refused with errno {errno}",
            header.unique,
            header.opcode,
            header.len
        );
        return spare().map_or(0, |w| reply_error(w, &header, errno));
    }
    let init = (header.opcode == Opcode::Init as u32).then(|| init_request(&reader, &header));
    match fuse
        .server
        .handle_message(reader, Writer::from(writer), None, None)
    {
        Ok(n) => {
            if let Some(request) = init {
                fuse.initialized.store(true, Ordering::Release);
                if let (Some(notes), Some(request)) = (&fuse.notes, request) {
                    notes.send(&Note::Init(request));
                }
            }
            u32::try_from(n).unwrap_or(0)
        }
        Err(e) => {
            log::debug!("request {} (opcode {}): {e}", header.unique, header.opcode);
            spare().map_or(0, |w| reply_error(w, &header, error_code(&e)))
        }
    }
}

/// The whole INIT request (header and body) as the guest sent it, to report.
fn init_request(reader: &Reader<'_, ()>, header: &InHeader) -> Option<Vec<u8>> {
    let len = header.len as usize;
    if len > MAX_INIT_LEN {
        return None;
    }
    let mut bytes = vec![0u8; len];
    reader.clone().read_exact(&mut bytes).ok()?;
    Some(bytes)
}

/// The FUSE header, when the chain's first descriptor holds all of it (as every driver
/// sends it); None means: decode it the long way.
pub(crate) fn peek_header(mem: &GuestMem, chain: &Chain) -> Option<InHeader> {
    let desc = chain.clone().next()?;
    if desc.is_write_only() || (desc.len() as usize) < std::mem::size_of::<InHeader>() {
        return None;
    }
    mem.read_obj(desc.addr()).ok()
}

/// Why a request must not reach the server, as an errno: a header length that disagrees
/// with the chain (shorter than the header itself, or longer than what the guest supplied),
/// or anything but INIT before INIT.
fn refuse<F: FileSystem + Send + Sync>(
    fuse: &FuseServer<F>,
    h: &InHeader,
    supplied: usize,
) -> Option<i32> {
    let len = h.len as usize;
    if len < std::mem::size_of::<InHeader>() || len > supplied {
        return Some(libc::EINVAL);
    }
    if h.opcode != Opcode::Init as u32 && !fuse.initialized.load(Ordering::Acquire) {
        return Some(libc::EIO);
    }
    None
}

/// Answers a request the server could not decode, so that the guest's request completes.
fn reply_error(mut w: VirtioFsWriter<'_, ()>, header: &InHeader, errno: i32) -> u32 {
    let no_reply = [Opcode::Forget, Opcode::BatchForget, Opcode::Interrupt];
    if no_reply.iter().any(|op| *op as u32 == header.opcode) {
        return 0;
    }
    let out = OutHeader {
        len: std::mem::size_of::<OutHeader>() as u32,
        error: -errno,
        unique: header.unique,
    };
    match w.write_all(out.as_slice()) {
        Ok(()) => out.len,
        Err(_) => 0,
    }
}

fn error_code(e: &fuse_backend_rs::Error) -> i32 {
    use fuse_backend_rs::Error as E;
    match e {
        E::DecodeMessage(_)
        | E::MissingParameter
        | E::InvalidCString(_)
        | E::InvalidHeaderLength
        | E::InvalidXattrSize(_)
        | E::InvalidMessage(_) => libc::EINVAL,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFs;
    impl FileSystem for NoFs {
        type Inode = u64;
        type Handle = u64;
    }

    fn header(opcode: Opcode, len: u32) -> InHeader {
        InHeader {
            len,
            opcode: opcode as u32,
            unique: 7,
            ..Default::default()
        }
    }

    #[test]
    fn refuses_requests_before_init_and_lengths_that_disagree_with_the_chain() {
        let fuse = FuseServer::new(NoFs);
        assert_eq!(
            refuse(&fuse, &header(Opcode::Getattr, 56), 56),
            Some(libc::EIO)
        );
        assert_eq!(refuse(&fuse, &header(Opcode::Init, 56), 56), None);
        assert_eq!(
            refuse(&fuse, &header(Opcode::Init, 16), 56),
            Some(libc::EINVAL)
        );
        assert_eq!(
            refuse(&fuse, &header(Opcode::Init, 57), 56),
            Some(libc::EINVAL)
        );
        fuse.initialized.store(true, Ordering::Release);
        assert_eq!(refuse(&fuse, &header(Opcode::Getattr, 56), 56), None);
        assert_eq!(
            refuse(&fuse, &header(Opcode::Getattr, 0), 56),
            Some(libc::EINVAL)
        );
        assert_eq!(
            refuse(&fuse, &header(Opcode::Getattr, 4096), 56),
            Some(libc::EINVAL)
        );
    }
}
