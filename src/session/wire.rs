//! The socket itself: client frames in; queued events and frames of the session's own
//! (replies, pings, pongs) out; and the closing handshake.
//!
//! A write may be abandoned halfway: the session is killed (slow consumer, rate limit,
//! eviction) or the daemon shuts down while a frame is partly on the wire. What that
//! frame still lacks is then kept as the queue's rest, which goes out before the Close
//! frame, so the peer never reads a Close as the rest of a half-written frame.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::chat::{Closed, Replies};
use crate::frame_reader::{FrameReader, Incoming, ReadError};
use crate::frame_writer;
use crate::hub::SessionHandle;
use crate::outbound::Batch;
use crate::protocol::close;

/// How long a single write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take, rest of a frame included.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One upgraded connection's socket, and what its writes race: the kill switch (the
/// handle's queue) and the daemon's shutdown.
pub(super) struct Wire<S> {
    /// The upgraded connection; frames are read by `reader`, written by `frame_writer`.
    pub io: S,
    pub reader: FrameReader,
    pub handle: Arc<SessionHandle>,
    /// Becomes true when the daemon shuts down.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

/// The chat core's replies go straight onto the socket, in order.
impl<S> Replies for Wire<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn reply(&mut self, frame: Utf8Bytes) -> Result<(), Closed> {
        Box::pin(self.write_frames(frame_writer::TEXT, std::slice::from_ref(&frame))).await
    }
}

/// Bytes written of a write's parts: the rest of an earlier frame, then new frames.
#[derive(Default)]
struct Written {
    rest: usize,
    frames: usize,
}

impl<S> Wire<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The next client frame; `None` when the peer is gone.
    pub(super) async fn next_incoming(&mut self) -> Option<Result<Incoming, ReadError>> {
        std::future::poll_fn(|cx| self.reader.poll_next(&mut self.io, cx)).await
    }

    /// Writes what [`Outbound::pop_batch`] took; the session stops being the writer after.
    ///
    /// [`Outbound::pop_batch`]: crate::outbound::Outbound::pop_batch
    pub(super) async fn write_batch(&mut self, batch: Batch) -> Result<(), Closed> {
        // Boxed: the write's state (timer, iovecs) lives only while writing, not in
        // every idle connection's future.
        let r = Box::pin(self.write_out(batch.rest, frame_writer::TEXT, &batch.frames)).await;
        self.handle.queue().end_write();
        r
    }

    /// Writes frames of the session's own (replies, ping, pong, close) as the socket's
    /// writer: a fan-out's direct write cannot slip in between.
    pub(super) async fn write_frames<P>(&mut self, opcode: u8, payloads: &[P]) -> Result<(), Closed>
    where
        P: AsRef<[u8]> + Sync,
    {
        let rest = self.handle.queue().begin_write();
        let r = self.write_out(rest, opcode, payloads).await;
        self.handle.queue().end_write();
        r
    }

    /// Writes the rest of a frame a direct write began, then frames with
    /// [`frame_writer`], racing the kill switch and a timeout so a stuck peer cannot
    /// hold the session. Abandoned halfway, it keeps the unfinished frame's remainder.
    async fn write_out<P>(
        &mut self,
        rest: Option<Box<[u8]>>,
        opcode: u8,
        payloads: &[P],
    ) -> Result<(), Closed>
    where
        P: AsRef<[u8]> + Sync,
    {
        let mut written = Written::default();
        let done = {
            let write = write_counted(
                &mut self.io,
                rest.as_deref(),
                opcode,
                payloads,
                &mut written,
            );
            tokio::pin!(write);
            // Most writes complete at once (the socket buffer has room): those arm no
            // timer and register with no kill switch.
            match write.as_mut().now_or_never() {
                Some(r) => r.is_ok(),
                None => tokio::select! {
                    r = tokio::time::timeout(WRITE_TIMEOUT, write) => matches!(r, Ok(Ok(()))),
                    _ = self.handle.queue().interrupted() => false,
                    _ = self.closing.wait_for(|closing| *closing) => false,
                },
            }
        };
        if done {
            return Ok(());
        }
        let unfinished = match &rest {
            Some(rest) if written.rest < rest.len() => Some(rest[written.rest..].into()),
            _ => frame_writer::unfinished_frame(opcode, payloads, written.frames),
        };
        if let Some(tail) = unfinished {
            self.handle.queue().keep_unsent(tail);
        }
        Err(Closed)
    }

    /// Answers the peer's Close (its code was checked by the reader): the same code, or
    /// an empty payload when it sent none. 1005 ("no code") is never put on the wire.
    pub(super) async fn echo_close(&mut self, code: Option<u16>) {
        let echo = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
        if Box::pin(self.write_frames(frame_writer::CLOSE, &[echo]))
            .await
            .is_ok()
        {
            count_close(code);
        }
    }

    /// Sends a Close frame with `code` (none for 0) after `rest`, the unsent part of a
    /// frame begun earlier, and waits briefly for the peer's Close. When the daemon shuts
    /// down it does not wait: the Close is followed by the end of the stream at once.
    pub(super) async fn close(&mut self, code: u16, rest: Option<Box<[u8]>>) {
        if code == 0 {
            return;
        }
        // Codes RFC 6455 reserves (1005, 1006, 1015…) never go on the wire.
        let sent = close::may_be_sent(code).then_some(code);
        let payload = match sent {
            Some(code) => [&code.to_be_bytes()[..], reason(code).as_bytes()].concat(),
            None => Vec::new(),
        };
        // The process exits right after a shutdown, which ends every stream anyway:
        // waiting for peers' answers there only held the daemon's exit by the timeout
        // for each client slow to read.
        let shutting_down = *self.closing.borrow();
        // Send Close, then read until the peer's Close or a short timeout. Should the
        // rest not go out in time, neither does the Close: the socket is just dropped.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if let Some(rest) = rest {
                self.io.write_all(&rest).await?;
            }
            frame_writer::write_frames(&mut self.io, frame_writer::CLOSE, &[payload]).await?;
            count_close(sent);
            if shutting_down {
                // What the peer sent already is read, not left unread (which would
                // reset the stream instead of ending it); nothing more is waited for.
                while let Some(Some(m)) = self.reader.next(&mut self.io).now_or_never() {
                    if matches!(m, Ok(Incoming::Close(_)) | Err(_)) {
                        break;
                    }
                }
            } else {
                while let Some(m) = self.reader.next(&mut self.io).await {
                    if matches!(m, Ok(Incoming::Close(_)) | Err(_)) {
                        break;
                    }
                }
            }
            self.io.shutdown().await
        })
        .await;
    }
}

/// Writes `rest` then the frames, counting what the socket took in `written`.
async fn write_counted<W, P>(
    io: &mut W,
    rest: Option<&[u8]>,
    opcode: u8,
    payloads: &[P],
    written: &mut Written,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    P: AsRef<[u8]>,
{
    if let Some(rest) = rest {
        while written.rest < rest.len() {
            let n = io.write(&rest[written.rest..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written.rest += n;
        }
    }
    frame_writer::write_frames_counted(io, opcode, payloads, &mut written.frames).await
}

/// `pgchat_closes_total{code}`: every Close frame sent, by code (`none`: empty payload).
fn count_close(code: Option<u16>) {
    let code = code.map_or_else(|| "none".to_string(), |c| c.to_string());
    metrics::counter!("pgchat_closes_total", "code" => code).increment(1);
}

fn reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::AUTH_TIMEOUT => "authentication timeout",
        close::TOKEN_EXPIRED => "token expired",
        close::RATE_LIMITED => "too many requests",
        close::SLOW_CONSUMER => "client too slow to keep up",
        close::IDLE_TIMEOUT => "idle timeout",
        close::MESSAGE_TOO_BIG => "frame too large",
        close::PROTOCOL_ERROR => "websocket protocol error",
        close::INVALID_DATA => "text frame is not valid UTF-8",
        close::TRY_AGAIN_LATER => "server busy: authenticate sooner or try again later",
        _ => "internal error",
    }
}
