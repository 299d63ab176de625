//! The WebSocket transport: one connection's event loop over the chat core. It reads
//! client frames and hands each request to [`chat::dispatch`], writes queued hub events
//! in batches, pings, and enforces the deadlines (auth timeout, token expiry, idle
//! timeout). What a request does is the core's business (`chat`).
//!
//! - [`wire`]: the socket's reads and writes, the closing handshake
//! - [`deadlines`]: the connection's deadlines behind one timer

mod deadlines;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::Instrument;

use crate::admission::Ticket;
use crate::app::App;
use crate::chat::{self, Closed, Conn};
use crate::frame_reader::{FrameReader, Incoming, ReadError};
use crate::frame_writer;
use crate::outbound::{Batch, Outbound};
use crate::protocol::{self, close, ErrorCode, FrameError};
use deadlines::{Deadlines, Due};
use wire::Wire;

/// Hub events written per flush.
const WRITE_BATCH: usize = 64;

impl<S> Drop for Session<S> {
    /// Closes the queue before the socket is dropped, on every path (a panic included):
    /// fan-outs write to the descriptor directly and must never reach a reused number.
    fn drop(&mut self) {
        self.conn.handle.queue().close();
    }
}

pub struct Session<S> {
    app: Arc<App>,
    /// The connection's state in the chat core.
    conn: Conn,
    /// The upgraded socket: what the core's replies and the hub's events are written to.
    wire: Wire<S>,
}

enum Wake {
    /// Killed or shutting down: the checks at the top of the loop end it.
    Ended,
    Outbound(Batch),
    Incoming(Option<Result<Incoming, ReadError>>),
    /// The deadline timer fired: something may be due.
    Timer,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// A session for an upgraded connection. `fd` is its descriptor when `io` is a plain
    /// socket that fan-outs may write to directly; `early` are bytes the client sent right
    /// behind its upgrade request; `ticket` (its admission) is given back when the
    /// session ends.
    pub fn new(
        io: S,
        fd: Option<std::os::fd::RawFd>,
        early: Vec<u8>,
        app: Arc<App>,
        ticket: Option<Ticket>,
    ) -> Self {
        let conn = Conn::new(&app, fd, ticket);
        let wire = Wire {
            io,
            reader: FrameReader::new(app.config.max_frame_bytes, early),
            handle: conn.handle.clone(),
            closing: app.closing.subscribe(),
        };
        Session { app, conn, wire }
    }

    /// Runs the connection to its end. The session is built by [`Session::new`], and
    /// this is a plain fn returning an `async move` block that uses the session in
    /// place: an `async fn` moves its arguments into locals, so every connection's task
    /// would hold the session twice (568 bytes more per socket).
    pub fn run(self, initial_token: Option<String>) -> impl std::future::Future<Output = ()> {
        let mut session = self;
        async move {
            metrics::gauge!("pgchat_connections").increment(1.0);
            // Every log line of this connection carries its id.
            let span = tracing::info_span!("conn", id = session.conn.handle.conn_id);
            session.run_in_span(initial_token).instrument(span).await;
            metrics::gauge!("pgchat_connections").decrement(1.0);
        }
    }

    async fn run_in_span(&mut self, initial_token: Option<String>) {
        tracing::debug!("connected");
        if let Some(token) = initial_token {
            let _ = Box::pin(chat::authenticate(
                &self.app,
                &mut self.conn,
                &token,
                &mut self.wire,
            ))
            .await;
        }
        let handle = self.conn.handle.clone();
        // Boxed: inline, the loop's state was laid out beside the other awaits' instead
        // of over them (1.5 KB for this future instead of 0.1 KB + 0.7 KB in the box).
        let code = Box::pin(self.event_loop(handle.queue())).await;
        let rest = handle.queue().close();
        Box::pin(self.wire.close(code, rest)).await;
        Box::pin(self.conn.end(&self.app)).await;
        tracing::debug!(code, "disconnected");
    }

    /// Runs until the connection ends; returns the close code to send (0: none).
    async fn event_loop(&mut self, queue: &Outbound) -> u16 {
        let config = &self.app.config;
        let mut deadlines = Deadlines::new(
            Instant::now(),
            config.auth_timeout(),
            config.idle_timeout(),
            config.ping_interval(),
        );
        // The timer is built once and reset, not rebuilt on every wake-up: a busy socket
        // wakes once per batch of frames.
        let mut armed_for = deadlines.earliest();
        let timer = tokio::time::sleep_until(armed_for);
        tokio::pin!(timer);
        let mut closing = self.wire.closing.clone();
        let mut fired = false;
        let mut expiry_of: Option<Option<i64>> = None;
        loop {
            // Killed (slow consumer, rate limit…: the queue woke us) or shutting down.
            if let Some(code) = self.conn.close_code() {
                return code;
            }
            if *closing.borrow_and_update() {
                return close::GOING_AWAY;
            }
            if let Some(identity) = self.conn.identity() {
                if expiry_of != Some(identity.exp) {
                    expiry_of = Some(identity.exp);
                    deadlines.authenticated(self.token_deadline());
                }
            }
            let earliest = deadlines.earliest();
            if fired || earliest < armed_for {
                timer.as_mut().reset(earliest);
                armed_for = earliest;
                fired = false;
            }
            let wake = tokio::select! {
                biased;
                _ = closing.changed() => Wake::Ended,
                // An empty batch: the queue was interrupted by a kill.
                batch = queue.pop_batch(WRITE_BATCH) => match batch.is_empty() {
                    true => Wake::Ended,
                    false => Wake::Outbound(batch),
                },
                m = self.wire.next_incoming() => Wake::Incoming(m),
                _ = timer.as_mut() => Wake::Timer,
            };
            let result = match wake {
                Wake::Ended => continue,
                Wake::Outbound(batch) => self.wire.write_batch(batch).await,
                Wake::Incoming(None) | Wake::Incoming(Some(Err(ReadError::Io(_)))) => return 0,
                Wake::Incoming(Some(Err(ReadError::TooBig(_)))) => return close::MESSAGE_TOO_BIG,
                Wake::Incoming(Some(Err(ReadError::Protocol(_)))) => return close::PROTOCOL_ERROR,
                Wake::Incoming(Some(Err(ReadError::InvalidUtf8))) => return close::INVALID_DATA,
                Wake::Incoming(Some(Ok(message))) => {
                    deadlines.heard_from_client(Instant::now());
                    match message {
                        // Boxed: command futures are large and short-lived; keeping them
                        // out of the connection's own future keeps idle sockets small.
                        Incoming::Text(text) => {
                            queue.begin_command();
                            let r = Box::pin(self.on_text(&text)).await;
                            queue.end_command();
                            r
                        }
                        Incoming::Binary => {
                            let err = FrameError::invalid("binary frames are not supported");
                            Box::pin(chat::send_error(&mut self.wire, None, err)).await
                        }
                        Incoming::Ping(payload) => {
                            Box::pin(self.wire.write_frames(frame_writer::PONG, &[payload])).await
                        }
                        Incoming::Pong => Ok(()),
                        Incoming::Close(code) => {
                            // The connection ends here.
                            Box::pin(self.wire.echo_close(code)).await;
                            return 0;
                        }
                    }
                }
                Wake::Timer => {
                    fired = true;
                    match deadlines.take_due(Instant::now()) {
                        None => Ok(()),
                        Some(Due::Ping) => {
                            let ping = [Utf8Bytes::default()];
                            Box::pin(self.wire.write_frames(frame_writer::PING, &ping)).await
                        }
                        Some(Due::AuthTimeout) => {
                            let err = FrameError::new(
                                ErrorCode::Unauthenticated,
                                "no valid auth before the auth timeout",
                            );
                            let _ = Box::pin(chat::send_error(&mut self.wire, None, err)).await;
                            return close::AUTH_TIMEOUT;
                        }
                        Some(Due::TokenExpired) => {
                            let err = FrameError::new(
                                ErrorCode::TokenExpired,
                                "token expired and was not refreshed",
                            );
                            let _ = Box::pin(chat::send_error(&mut self.wire, None, err)).await;
                            return close::TOKEN_EXPIRED;
                        }
                        Some(Due::Idle) => return close::IDLE_TIMEOUT,
                    }
                }
            };
            if result.is_err() {
                // Killed or shutting down mid-write: the Close follows the frame's rest.
                let shutting_down = *closing.borrow();
                return self
                    .conn
                    .close_code()
                    .or(shutting_down.then_some(close::GOING_AWAY))
                    .unwrap_or(0);
            }
        }
    }

    /// When the current token stops being acceptable (PostgREST's 30 s leeway included);
    /// `None` for a token that never expires, or not before the clock runs out.
    fn token_deadline(&self) -> Option<Instant> {
        let exp = self.conn.identity()?.exp?;
        let remaining = exp
            .saturating_add(30)
            .saturating_sub(crate::auth::unix_now());
        Instant::now().checked_add(Duration::from_secs(remaining.max(0) as u64))
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        match protocol::parse(text) {
            Ok(request) => chat::dispatch(&self.app, &mut self.conn, request, &mut self.wire).await,
            Err((reference, err)) => {
                chat::send_error(&mut self.wire, reference.as_ref(), err).await
            }
        }
    }
}
