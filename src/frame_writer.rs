//! Writes server-to-client WebSocket frames straight from the shared event bytes.
//!
//! tungstenite copies every frame into a per-connection write buffer that keeps the
//! capacity of the largest frame ever sent. The largest is usually the `joined` reply
//! with the room's online list: in a room of 5,000 that kept ~140 KB per socket (700 MB
//! for the room). Here a batch goes out in one `writev` of (header, payload) pairs:
//! nothing is copied and nothing stays allocated after the write.
//!
//! The session writes its replies, pings, pongs, closes and queued events through here;
//! a fan-out into an idle socket is written by its producer with the same [`header`]
//! (`outbound::direct`). The queue lets only one of them write at a time, so frames
//! never interleave.

use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Opcode of a text frame (RFC 6455 §5.2).
pub const TEXT: u8 = 0x1;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;

/// iovecs per `writev`; well under the kernel's `UIO_MAXIOV` (1024).
const MAX_SLICES: usize = 128;

/// An unmasked, final frame header for a payload of `len` bytes: (bytes, used length).
pub fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// A client-to-server frame, masked with `mask` as RFC 6455 §5.3 requires of clients.
/// The server never sends these; the bench and the tests of [`crate::frame_reader`] do.
pub fn masked_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let (h, used) = header(opcode, payload.len());
    let mut frame = Vec::with_capacity(used + 4 + payload.len());
    frame.extend_from_slice(&h[..used]);
    if !fin {
        frame[0] &= 0x7F;
    }
    frame[1] |= 0x80;
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    frame
}

/// Writes each payload as one final frame of `opcode`, in order, in as few `writev`
/// calls as the socket allows.
pub async fn write_frames<W, P>(out: &mut W, opcode: u8, payloads: &[P]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    P: AsRef<[u8]>,
{
    write_frames_counted(out, opcode, payloads, &mut 0).await
}

/// [`write_frames`], adding to `written` the bytes the socket took as it goes: if the
/// write is abandoned halfway, [`unfinished_frame`] tells what a frame still lacks.
pub async fn write_frames_counted<W, P>(
    out: &mut W,
    opcode: u8,
    payloads: &[P],
    written: &mut usize,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    P: AsRef<[u8]>,
{
    let headers: Vec<([u8; 10], usize)> = payloads
        .iter()
        .map(|p| header(opcode, p.as_ref().len()))
        .collect();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity((payloads.len() * 2).min(MAX_SLICES));
    let mut next = 0;
    while next < payloads.len() {
        slices.clear();
        let first = next;
        while next < payloads.len() && slices.len() + 2 <= MAX_SLICES {
            let (h, used) = &headers[next];
            slices.push(IoSlice::new(&h[..*used]));
            let payload = payloads[next].as_ref();
            if !payload.is_empty() {
                slices.push(IoSlice::new(payload));
            }
            next += 1;
        }
        debug_assert!(next > first);
        write_all_vectored(out, &mut slices, written).await?;
    }
    out.flush().await
}

async fn write_all_vectored<W>(
    out: &mut W,
    mut slices: &mut [IoSlice<'_>],
    written: &mut usize,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while !slices.is_empty() {
        let n = out.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *written += n;
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The bytes still missing from the frame that was being written when [`write_frames`]
/// of these payloads stopped after `written` bytes; `None` if it stopped between frames.
/// Only these may follow on the wire: anything else would be read as that frame's rest.
pub fn unfinished_frame<P: AsRef<[u8]>>(
    opcode: u8,
    payloads: &[P],
    written: usize,
) -> Option<Box<[u8]>> {
    let mut start = 0;
    for payload in payloads {
        let payload = payload.as_ref();
        let (h, used) = header(opcode, payload.len());
        let end = start + used + payload.len();
        if written < end {
            if written == start {
                return None;
            }
            let into = written - start;
            let mut tail = Vec::with_capacity(end - written);
            if into < used {
                tail.extend_from_slice(&h[into..used]);
                tail.extend_from_slice(payload);
            } else {
                tail.extend_from_slice(&payload[into - used..]);
            }
            return Some(tail.into_boxed_slice());
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let (h, n) = header(TEXT, 5);
        assert_eq!(&h[..n], &[0x81, 5]);
        let (h, n) = header(TEXT, 300);
        assert_eq!(&h[..n], &[0x81, 126, 1, 44]);
        let (h, n) = header(TEXT, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let (h, n) = header(PING, 0);
        assert_eq!(&h[..n], &[0x89, 0]);
    }

    /// A writer that accepts at most `step` bytes per call, to exercise partial writes.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_abandoned_write_leaves_exactly_the_rest_of_its_frame() {
        let big = "z".repeat(300);
        let payloads = ["ab", big.as_str(), "", "end"];
        let mut wire = Vec::new();
        let mut boundaries = vec![0];
        for p in payloads {
            let (h, n) = header(TEXT, p.len());
            wire.extend_from_slice(&h[..n]);
            wire.extend_from_slice(p.as_bytes());
            boundaries.push(wire.len());
        }
        for written in 0..=wire.len() {
            let tail = unfinished_frame(TEXT, &payloads, written);
            if boundaries.contains(&written) {
                assert_eq!(tail, None, "at {written}");
                continue;
            }
            let end = *boundaries.iter().find(|b| **b > written).unwrap();
            assert_eq!(tail.as_deref(), Some(&wire[written..end]), "at {written}");
        }
    }

    #[tokio::test]
    async fn partial_writes_still_produce_whole_frames_in_order() {
        let big = "x".repeat(70_000);
        let payloads = ["hi", big.as_str(), "", "end"];
        let mut out = Trickle {
            out: Vec::new(),
            step: 7,
        };
        write_frames(&mut out, TEXT, &payloads).await.unwrap();
        let mut expected = Vec::new();
        for p in payloads {
            let (h, n) = header(TEXT, p.len());
            expected.extend_from_slice(&h[..n]);
            expected.extend_from_slice(p.as_bytes());
        }
        assert_eq!(out.out, expected);
    }
}
