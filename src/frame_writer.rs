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
//! (`outbound::direct`). Headers come from the codec ([`pgchat_ws`]); this module is
//! the socket-facing part. The queue lets only one of them write at a time, so frames
//! never interleave.

use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use pgchat_ws::{header, masked_frame, unfinished_frame, CLOSE, PING, PONG, TEXT};

/// iovecs per `writev`; well under the kernel's `UIO_MAXIOV` (1024).
const MAX_SLICES: usize = 128;

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

#[cfg(test)]
mod tests {
    use super::*;

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
