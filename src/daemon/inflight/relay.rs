//! The control-socket relay that answers GET_INFLIGHT_FD and SET_INFLIGHT_FD, which
//! vhost-user-backend 0.21 refuses: the front end's connection ends here, every other message
//! goes on, with its file descriptors, to vhost-user-backend's handler over a private socket,
//! and every reply comes back. Only control messages cross it; the rings do not.
//!
//! The private socket listens on an abstract address in the serving process's own network
//! namespace (the namespace sandbox gives each one a new, empty one), so nothing but this
//! process can connect to it.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use vhost::vhost_user::Listener;

use super::region::{self, InflightRegion, Shape};

const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_INFLIGHT_FD: u32 = 31;
const SET_INFLIGHT_FD: u32 = 32;
const VERSION_1: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;
const REPLY_ACK_FEATURE: u64 = 1 << 3;
/// vhost-user's limit on a message body.
const MAX_BODY: usize = 0x1000;
/// vhost-user's limit on descriptors attached to one message.
const MAX_FDS: usize = 32;
const HEADER: usize = 12;
/// `VhostUserInflight`: two u64, two u16, padded to 24 bytes.
const INFLIGHT_BODY: usize = 24;

/// Where the region the front end handed over is kept for the queue threads.
#[derive(Default)]
pub(crate) struct InflightSlot(Mutex<Option<Arc<InflightRegion>>>);

impl InflightSlot {
    /// The region in use on this connection, if the front end set one.
    pub(crate) fn get(&self) -> Option<Arc<InflightRegion>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, region: InflightRegion) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(region));
    }
}

/// The private listener vhost-user-backend accepts relayed connections on.
pub(crate) struct Relay {
    listener: Listener,
    address: SocketAddr,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the private listener (before the seccomp filter: bind and listen are not on it).
    pub(crate) fn new() -> io::Result<Relay> {
        let name = format!("puzzlefs-virtiofsd/inflight-relay/{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes())?;
        let std_listener = UnixListener::bind_addr(&address)?;
        // SAFETY: the fd comes from a UnixListener just made and given up here, so the
        // Listener becomes its only owner (it closes it once, and unlinks no path).
        let listener = unsafe { Listener::from_raw_fd(std_listener.into_raw_fd()) };
        Ok(Relay { listener, address })
    }

    /// Where vhost-user-backend accepts the connection [`Relay::attach`] makes.
    pub(crate) fn listener(&mut self) -> &mut Listener {
        &mut self.listener
    }

    /// Starts relaying `front_end` (the VMM's accepted connection): connects to the private
    /// listener (which the caller then accepts through vhost-user-backend) and starts one
    /// thread per direction. Regions the front end sets land in `slot`.
    pub(crate) fn attach(
        &self,
        front_end: UnixStream,
        slot: Arc<InflightSlot>,
    ) -> io::Result<Relayed> {
        let inner = UnixStream::connect_addr(&self.address)?;
        let front = Arc::new(front_end);
        let inner = Arc::new(inner);
        let writes = Arc::new(Mutex::new(()));
        let down = {
            let (front, inner, writes) = (front.clone(), inner.clone(), writes.clone());
            std::thread::Builder::new()
                .name("vhost-user relay".into())
                .spawn(move || {
                    if let Err(e) = relay_requests(&front, &inner, &writes, &slot) {
                        log::debug!("relay to the back end ended: {e}");
                    }
                    let _ = inner.shutdown(std::net::Shutdown::Both);
                })?
        };
        let up = {
            let (front, inner) = (front.clone(), inner.clone());
            std::thread::Builder::new()
                .name("vhost-user replies".into())
                .spawn(move || {
                    if let Err(e) = relay_replies(&inner, &front, &writes) {
                        log::debug!("relay to the front end ended: {e}");
                    }
                    let _ = front.shutdown(std::net::Shutdown::Both);
                })?
        };
        Ok(Relayed {
            front,
            inner,
            threads: vec![down, up],
        })
    }
}

/// A connection being relayed.
pub(crate) struct Relayed {
    front: Arc<UnixStream>,
    inner: Arc<UnixStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Relayed {
    /// Closes both sides and waits for the relay threads.
    pub(crate) fn finish(self) {
        let _ = self.front.shutdown(std::net::Shutdown::Both);
        let _ = self.inner.shutdown(std::net::Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Message {
    code: u32,
    flags: u32,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Reads one message; `None` at a clean end of stream.
fn read_message(from: &UnixStream) -> io::Result<Option<Message>> {
    let mut header = [0u8; HEADER];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        let mut iov = [IoSliceMut::new(&mut header)];
        match rustix::net::recvmsg(from, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got == 0 {
        return Ok(None);
    }
    (&*from).read_exact(&mut header[got..])?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (code, flags, size) = (word(0), word(4), word(8) as usize);
    if size > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message {code} with a {size}-byte body"),
        ));
    }
    let mut body = vec![0u8; size];
    (&*from).read_exact(&mut body)?;
    Ok(Some(Message {
        code,
        flags,
        body,
        fds,
    }))
}

fn write_message(to: &UnixStream, msg: &Message) -> io::Result<()> {
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&msg.code.to_le_bytes());
    header[4..8].copy_from_slice(&msg.flags.to_le_bytes());
    header[8..].copy_from_slice(&(msg.body.len() as u32).to_le_bytes());
    let fds: Vec<BorrowedFd<'_>> = msg.fds.iter().map(AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("too many descriptors"));
    }
    let iov = [IoSlice::new(&header), IoSlice::new(&msg.body)];
    let total = HEADER + msg.body.len();
    let sent = loop {
        match rustix::net::sendmsg(to, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if sent < total {
        let mut all = header.to_vec();
        all.extend_from_slice(&msg.body);
        (&*to).write_all(&all[sent..])?;
    }
    Ok(())
}

/// Front end to back end: every message passes except the two inflight ones, answered here.
fn relay_requests(
    front: &UnixStream,
    inner: &UnixStream,
    writes: &Mutex<()>,
    slot: &InflightSlot,
) -> io::Result<()> {
    let mut protocol = 0u64;
    while let Some(msg) = read_message(front)? {
        match msg.code {
            GET_INFLIGHT_FD => {
                let reply = get_inflight(&msg);
                let _w = writes.lock().unwrap_or_else(|e| e.into_inner());
                write_message(front, &reply)?;
            }
            SET_INFLIGHT_FD => {
                let status = set_inflight(msg.body.as_slice(), msg.fds, slot);
                if msg.flags & NEED_REPLY != 0 && protocol & REPLY_ACK_FEATURE != 0 {
                    let ack = Message {
                        code: SET_INFLIGHT_FD,
                        flags: VERSION_1 | REPLY,
                        body: u64::from(status.is_err()).to_le_bytes().to_vec(),
                        fds: Vec::new(),
                    };
                    let _w = writes.lock().unwrap_or_else(|e| e.into_inner());
                    write_message(front, &ack)?;
                }
                if let Err(e) = status {
                    log::error!("SET_INFLIGHT_FD refused: {e}");
                }
            }
            code => {
                if code == SET_PROTOCOL_FEATURES && msg.body.len() >= 8 {
                    protocol = u64::from_le_bytes(msg.body[..8].try_into().unwrap_or([0; 8]));
                }
                write_message(inner, &msg)?;
            }
        }
    }
    Ok(())
}

/// Back end to front end: replies, whole messages at a time (so that they never interleave
/// with the replies answered here).
fn relay_replies(inner: &UnixStream, front: &UnixStream, writes: &Mutex<()>) -> io::Result<()> {
    while let Some(msg) = read_message(inner)? {
        let _w = writes.lock().unwrap_or_else(|e| e.into_inner());
        write_message(front, &msg)?;
    }
    Ok(())
}

fn parse_shape(body: &[u8]) -> Option<Shape> {
    if body.len() < 20 {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap_or([0; 8]));
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    Some(Shape {
        mmap_size: u64_at(0),
        mmap_offset: u64_at(8),
        num_queues: u16_at(16),
        queue_size: u16_at(18),
    })
}

fn shape_body(shape: &Shape) -> Vec<u8> {
    let mut body = Vec::with_capacity(INFLIGHT_BODY);
    body.extend_from_slice(&shape.mmap_size.to_le_bytes());
    body.extend_from_slice(&shape.mmap_offset.to_le_bytes());
    body.extend_from_slice(&shape.num_queues.to_le_bytes());
    body.extend_from_slice(&shape.queue_size.to_le_bytes());
    body.resize(INFLIGHT_BODY, 0);
    body
}

/// A new region for the front end to keep; on failure a reply with size 0 and no descriptor,
/// which the front end takes as a refusal.
fn get_inflight(msg: &Message) -> Message {
    let asked = parse_shape(&msg.body);
    let made = asked
        .ok_or_else(|| io::Error::other("short body"))
        .and_then(|s| region::create(s.num_queues, s.queue_size));
    let (body, fds) = match made {
        Ok((file, shape)) => {
            log::info!(
                "inflight region: {} queues of {}, {} bytes",
                shape.num_queues,
                shape.queue_size,
                shape.mmap_size
            );
            (shape_body(&shape), vec![OwnedFd::from(file)])
        }
        Err(e) => {
            log::error!("GET_INFLIGHT_FD refused: {e}");
            let refused = Shape {
                mmap_size: 0,
                mmap_offset: 0,
                num_queues: asked.map_or(0, |s| s.num_queues),
                queue_size: asked.map_or(0, |s| s.queue_size),
            };
            (shape_body(&refused), Vec::new())
        }
    };
    Message {
        code: GET_INFLIGHT_FD,
        flags: VERSION_1 | REPLY,
        body,
        fds,
    }
}

fn set_inflight(body: &[u8], mut fds: Vec<OwnedFd>, slot: &InflightSlot) -> io::Result<()> {
    let shape = parse_shape(body).ok_or_else(|| io::Error::other("short body"))?;
    if fds.len() != 1 {
        return Err(io::Error::other(format!(
            "{} descriptors attached (expected 1)",
            fds.len()
        )));
    }
    let file = std::fs::File::from(fds.remove(0));
    let region = InflightRegion::map(&file, shape)?;
    log::info!(
        "inflight region set: {} queues of {}",
        shape.num_queues,
        shape.queue_size
    );
    slot.set(region);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(code: u32, flags: u32, body: Vec<u8>, fds: Vec<OwnedFd>) -> Message {
        Message {
            code,
            flags,
            body,
            fds,
        }
    }

    #[test]
    fn messages_cross_whole_with_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (file, _) = region::create(1, 8).unwrap();
        write_message(
            &a,
            &message(9, VERSION_1 | NEED_REPLY, vec![1, 2, 3], vec![file.into()]),
        )
        .unwrap();
        let got = read_message(&b).unwrap().unwrap();
        assert_eq!((got.code, got.flags, got.body), (9, 9, vec![1, 2, 3]));
        assert_eq!(got.fds.len(), 1);
        drop(a);
        assert!(read_message(&b).unwrap().is_none());
    }

    #[test]
    fn an_oversized_body_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut header = Vec::new();
        for word in [1u32, 1, MAX_BODY as u32 + 1] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        (&a).write_all(&header).unwrap();
        assert!(read_message(&b).is_err());
    }

    #[test]
    fn the_front_end_gets_a_region_and_hands_it_back() {
        let asked = Shape {
            mmap_size: 0,
            mmap_offset: 0,
            num_queues: 2,
            queue_size: 64,
        };
        let reply = get_inflight(&message(
            GET_INFLIGHT_FD,
            VERSION_1,
            shape_body(&asked),
            vec![],
        ));
        assert_eq!(reply.flags, VERSION_1 | REPLY);
        assert_eq!(reply.fds.len(), 1);
        let shape = parse_shape(&reply.body).unwrap();
        assert_eq!(shape.num_queues, 2);
        assert_eq!(shape.mmap_size, 2 * region::queue_region_size(64) as u64);
        let slot = InflightSlot::default();
        set_inflight(&reply.body, reply.fds, &slot).unwrap();
        assert!(slot.get().unwrap().queue(1).is_some());
        // Without its descriptor, or with a shape it cannot hold, it is refused.
        assert!(set_inflight(&reply.body, Vec::new(), &InflightSlot::default()).is_err());
        let bad = get_inflight(&message(
            GET_INFLIGHT_FD,
            VERSION_1,
            shape_body(&Shape {
                queue_size: 100,
                ..asked
            }),
            vec![],
        ));
        assert!(bad.fds.is_empty());
        assert_eq!(parse_shape(&bad.body).unwrap().mmap_size, 0);
    }
}
