//! Frames on a unix stream socket: a 4-byte little-endian length, then that many bytes of
//! JSON; a frame may carry file descriptors (SCM_RIGHTS), attached to its length.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame accepted (a metrics snapshot of 255 mounts fits many times over).
pub const MAX_FRAME: usize = 16 << 20;

/// Sends `message` with `fds` attached.
pub fn send<T: Serialize>(
    sock: &UnixStream,
    message: &T,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::other("control message too large"));
    }
    let len = (body.len() as u32).to_le_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && (fds.len() > 1 || !control.push(SendAncillaryMessage::ScmRights(fds))) {
        return Err(io::Error::other("one descriptor per control message"));
    }
    let mut sent = 0;
    while sent < len.len() {
        let n = sendmsg(
            sock,
            &[IoSlice::new(&len[sent..])],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
        control = SendAncillaryBuffer::default();
    }
    (&*sock).write_all(&body)
}

/// Receives one message and the descriptors attached to it. `Ok(None)` at end of stream.
pub fn recv<T: DeserializeOwned>(sock: &UnixStream) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut len = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut fds = Vec::new();
    let mut got = 0;
    while got < len.len() {
        let msg = recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut len[got..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if msg.bytes == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += msg.bytes;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("control frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    (&*sock).read_exact(&mut body)?;
    let message = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok(Some((message, fds)))
}

/// The descriptor `fd` as a [`BorrowedFd`] list of one, for [`send`].
pub fn one(fd: &impl AsFd) -> [BorrowedFd<'_>; 1] {
    [fd.as_fd()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn frames_carry_messages_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        send(&a, &serde_json::json!({"op": "x", "n": 1}), &one(&file)).unwrap();
        send(&a, &"second", &[]).unwrap();
        let (first, fds): (serde_json::Value, _) = recv(&b).unwrap().unwrap();
        assert_eq!(first["n"], 1);
        assert_eq!(fds.len(), 1);
        assert_ne!(fds[0].as_raw_fd(), file.as_raw_fd(), "a new descriptor");
        let (second, fds): (String, _) = recv(&b).unwrap().unwrap();
        assert_eq!((second.as_str(), fds.len()), ("second", 0));
        drop(a);
        assert!(recv::<String>(&b).unwrap().is_none(), "end of stream");
    }

    #[test]
    fn oversized_or_broken_frames_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(recv::<String>(&b).is_err());
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[5, 0, 0, 0, b'{']).unwrap();
        drop(a);
        assert!(recv::<String>(&b).is_err());
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[2, 0]).unwrap();
        drop(a);
        assert!(recv::<String>(&b).is_err(), "a length cut short");
    }
}
