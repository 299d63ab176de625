//! One producer-side write: queued frames go into the socket with non-blocking
//! `sendmsg` calls until the queue is empty or the socket's buffer is full. A frame sent
//! in part leaves its unsent bytes as the queue's `rest`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::frame_writer::{header, TEXT};

/// Frames per `sendmsg`: a direct write usually has one; a socket that fell behind has
/// its session write instead.
const MAX_FRAMES: usize = 16;

/// Writes `rest`, then frames off the front of `queue`, until done or the socket takes
/// no more. Errors other than a full buffer are left for the session's own write to
/// meet (it owns the connection's end).
pub(super) fn write(fd: RawFd, rest: &mut Option<Box<[u8]>>, queue: &mut VecDeque<Utf8Bytes>) {
    loop {
        let count = queue.len().min(MAX_FRAMES);
        let mut headers = [([0u8; 10], 0usize); MAX_FRAMES];
        for (h, frame) in headers.iter_mut().zip(queue.iter()) {
            *h = header(TEXT, frame.len());
        }
        let sent = {
            let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES + 1];
            let mut used = 0;
            if let Some(r) = rest.as_deref() {
                slices[used] = IoSlice::new(r);
                used += 1;
            }
            for ((h, len), frame) in headers.iter().zip(queue.iter()).take(count) {
                slices[used] = IoSlice::new(&h[..*len]);
                slices[used + 1] = IoSlice::new(frame.as_bytes());
                used += 2;
            }
            if used == 0 {
                return;
            }
            let total: usize = slices[..used].iter().map(|s| s.len()).sum();
            match send(fd, &slices[..used]) {
                Ok(n) => (n, n == total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        };
        let (n, all) = sent;
        consume(n, rest, queue, &headers[..count]);
        if !all {
            return;
        }
    }
}

/// Removes `n` sent bytes from the front of `rest` and `queue`; a frame sent in part
/// becomes the new `rest`.
fn consume(
    mut n: usize,
    rest: &mut Option<Box<[u8]>>,
    queue: &mut VecDeque<Utf8Bytes>,
    headers: &[([u8; 10], usize)],
) {
    if let Some(r) = rest.take() {
        if n < r.len() {
            *rest = Some(r[n..].into());
            return;
        }
        n -= r.len();
    }
    for (h, len) in headers {
        if n == 0 {
            return;
        }
        let frame = queue.pop_front().expect("a header per queued frame");
        let whole = len + frame.len();
        if n < whole {
            let mut tail = Vec::with_capacity(whole - n);
            if n < *len {
                tail.extend_from_slice(&h[n..*len]);
                tail.extend_from_slice(frame.as_bytes());
            } else {
                tail.extend_from_slice(&frame.as_bytes()[n - len..]);
            }
            *rest = Some(tail.into_boxed_slice());
            return;
        }
        n -= whole;
    }
}

/// `sendmsg` without blocking and without SIGPIPE (a peer that went away is an error
/// here, not a signal).
fn send(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, the slices outlive the
    // call, and `fd` is an open socket (the caller holds the queue's lock and has checked
    // that the session has not closed it).
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = slices.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn frames(texts: &[&str]) -> VecDeque<Utf8Bytes> {
        texts
            .iter()
            .map(|t| Utf8Bytes::from(t.to_string()))
            .collect()
    }

    fn wire(texts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in texts {
            let (h, n) = header(TEXT, t.len());
            out.extend_from_slice(&h[..n]);
            out.extend_from_slice(t.as_bytes());
        }
        out
    }

    #[test]
    fn writes_the_rest_then_whole_frames() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut rest = Some(Box::from(&b"tail"[..]));
        let mut queue = frames(&["one", "two"]);
        write(a.as_raw_fd(), &mut rest, &mut queue);
        assert!(rest.is_none() && queue.is_empty());
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        let mut expected = b"tail".to_vec();
        expected.extend(wire(&["one", "two"]));
        assert_eq!(got, expected);
    }

    #[test]
    fn a_full_socket_keeps_the_unsent_part_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let big = "x".repeat(100_000);
        let texts: Vec<&str> = (0..40).map(|_| big.as_str()).collect();
        let mut rest = None;
        let mut queue = frames(&texts);
        write(a.as_raw_fd(), &mut rest, &mut queue);
        assert!(
            rest.is_some() || !queue.is_empty(),
            "4 MB does not fit a socket buffer"
        );
        // What was written, then the rest, then the frames left, is the whole stream.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut a = a;
        use std::io::Write;
        if let Some(r) = rest.take() {
            a.write_all(&r).unwrap();
        }
        for f in queue.drain(..) {
            a.write_all(&wire(&[f.as_str()])).unwrap();
        }
        drop(a);
        assert_eq!(reader.join().unwrap(), wire(&texts));
    }

    #[test]
    fn partial_sends_split_inside_a_header_or_a_payload() {
        let texts = ["hello", "world"];
        let all = wire(&texts);
        let headers: Vec<_> = texts.iter().map(|t| header(TEXT, t.len())).collect();
        for n in 0..all.len() {
            let mut rest = None;
            let mut queue = frames(&texts);
            consume(n, &mut rest, &mut queue, &headers);
            let mut left = rest.map(|r| r.to_vec()).unwrap_or_default();
            for f in &queue {
                left.extend(wire(&[f.as_str()]));
            }
            assert_eq!(left, all[n..], "after {n} bytes");
        }
    }
}
