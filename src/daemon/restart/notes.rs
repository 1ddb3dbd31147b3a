//! The note channel: what a generation tells its respawner, one datagram per note on a
//! `SOCK_SEQPACKET` pair. Writes never block the serving process; the respawner drains the
//! channel while it waits and once more when the generation has died.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

/// Largest note: a FUSE INIT request is 64 bytes today; anything this long is refused.
const MAX_NOTE: usize = 4096;

/// One note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// The generation is set up and waits for its front end.
    Ready,
    /// The guest's FUSE INIT request, as it came (header and body), once it succeeded.
    Init(Vec<u8>),
}

impl Note {
    fn encode(&self) -> Vec<u8> {
        match self {
            Note::Ready => vec![b'R'],
            Note::Init(bytes) => [&[b'I'][..], bytes].concat(),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Note> {
        match bytes.split_first() {
            Some((b'R', [])) => Some(Note::Ready),
            Some((b'I', rest)) if !rest.is_empty() => Some(Note::Init(rest.to_vec())),
            _ => None,
        }
    }
}

/// A new channel: (the respawner's end, the generation's end), both close-on-exec and
/// non-blocking.
pub(crate) fn note_channel() -> io::Result<(NoteReceiver, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    Ok((NoteReceiver { fd: ours }, theirs))
}

/// The generation's end.
#[derive(Debug)]
pub(crate) struct NoteSender {
    fd: OwnedFd,
}

impl NoteSender {
    /// Takes over `fd`, the end a generation inherited.
    pub(crate) fn new(fd: OwnedFd) -> NoteSender {
        NoteSender { fd }
    }

    /// Sends `note`; a full channel drops it (and says so), it never blocks serving.
    pub(crate) fn send(&self, note: &Note) {
        let bytes = note.encode();
        if let Err(e) = rustix::io::write(self.fd.as_fd(), &bytes) {
            log::warn!("cannot tell the supervisor {note:?}: {e}");
        }
    }
}

impl AsRawFd for NoteSender {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The respawner's end.
#[derive(Debug)]
pub(crate) struct NoteReceiver {
    fd: OwnedFd,
}

impl NoteReceiver {
    /// Every note waiting, in order; stops at the first would-block or at end of stream.
    pub(crate) fn drain(&self) -> Vec<Note> {
        let mut notes = Vec::new();
        let mut buf = vec![0u8; MAX_NOTE + 1];
        loop {
            match rustix::io::read(self.fd.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) if n > MAX_NOTE => log::warn!("ignoring an oversized note"),
                Ok(n) => match Note::decode(&buf[..n]) {
                    Some(note) => notes.push(note),
                    None => log::warn!("ignoring a malformed note"),
                },
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_arrive_in_order_and_survive_the_sender() {
        let (rx, fd) = note_channel().unwrap();
        let tx = NoteSender::new(fd);
        tx.send(&Note::Ready);
        tx.send(&Note::Init(vec![1, 2, 3]));
        drop(tx);
        assert_eq!(rx.drain(), vec![Note::Ready, Note::Init(vec![1, 2, 3])]);
        assert!(rx.drain().is_empty());
    }

    #[test]
    fn malformed_notes_are_skipped() {
        assert_eq!(Note::decode(b""), None);
        assert_eq!(Note::decode(b"I"), None);
        assert_eq!(Note::decode(b"Rx"), None);
        assert_eq!(Note::decode(b"X12"), None);
        assert_eq!(Note::decode(b"I\x07"), Some(Note::Init(vec![7])));
    }
}
