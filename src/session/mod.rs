//! One WebSocket connection: authentication state, the event loop that reads client
//! frames, writes queued hub events in batches, pings, and enforces the deadlines
//! (auth timeout, token expiry, idle timeout). Commands live in `commands/`.

mod deadlines;
mod per_room;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::Instrument;

use crate::admission::Ticket;
use crate::auth::Identity;
use crate::frame_reader::{FrameReader, Incoming, ReadError};
use crate::frame_writer;
use crate::hub::{PresenceChange, SessionHandle};
use crate::outbound::{Batch, Outbound};
use crate::protocol::{self, close, ErrorCode, FrameError};
use crate::server::AppState;
use deadlines::{Deadlines, Due};
pub(crate) use per_room::JoinedRooms;

/// Hub events written per flush.
const WRITE_BATCH: usize = 64;
/// How long a single write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rate-limit refusals tolerated per minute before the connection is closed.
const MAX_STRIKES: u32 = 10;

impl<S> Drop for Session<S> {
    /// Closes the queue before the socket is dropped, on every path (a panic included):
    /// fan-outs write to the descriptor directly and must never reach a reused number.
    fn drop(&mut self) {
        self.handle.queue().close();
    }
}

/// The connection is over; stop the loop.
#[derive(Debug)]
pub struct Closed;

pub struct Session<S> {
    pub(crate) app: Arc<AppState>,
    /// The upgraded connection; frames are read by `reader`, written by `frame_writer`.
    io: S,
    reader: FrameReader,
    pub(crate) handle: Arc<SessionHandle>,
    /// Becomes true when the daemon shuts down.
    closing: tokio::sync::watch::Receiver<bool>,
    pub(crate) identity: Option<Identity>,
    /// Rooms this socket joined (the hub may have evicted some since).
    pub(crate) rooms: JoinedRooms,
    pub(crate) strikes: u32,
    strike_window: Instant,
    /// The connection's hold on the server's capacity, given back when the session
    /// ends; it leaves the unauthenticated pool when the session authenticates.
    pub(crate) ticket: Option<Ticket>,
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
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// A session for an upgraded connection. `fd` is its descriptor when `io` is a plain
    /// socket that fan-outs may write to directly; `early` are bytes the client sent right
    /// behind its upgrade request; `ticket` (its admission) is given back when the
    /// session ends.
    pub fn new(
        io: S,
        fd: Option<std::os::fd::RawFd>,
        early: Vec<u8>,
        app: Arc<AppState>,
        mut ticket: Option<Ticket>,
    ) -> Self {
        let conn_id = app.next_conn_id();
        let handle = Arc::new(SessionHandle::new(conn_id, app.config.outbound_queue, fd));
        // Evicted while upgrading: another client has its place; it ends at once.
        if ticket.as_mut().is_some_and(|t| !t.attach(&handle)) {
            handle.kill(close::TRY_AGAIN_LATER);
        }
        let closing = app.closing.subscribe();
        let reader = FrameReader::new(app.config.max_frame_bytes, early);
        Session {
            app,
            io,
            reader,
            handle,
            closing,
            identity: None,
            rooms: JoinedRooms::default(),
            strikes: 0,
            strike_window: Instant::now(),
            ticket,
        }
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
            let span = tracing::info_span!("conn", id = session.handle.conn_id);
            session.run_in_span(initial_token).instrument(span).await;
            metrics::gauge!("pgchat_connections").decrement(1.0);
        }
    }

    async fn run_in_span(&mut self, initial_token: Option<String>) {
        tracing::debug!("connected");
        if let Some(token) = initial_token {
            let _ = Box::pin(self.authenticate(None, &token)).await;
        }
        let handle = self.handle.clone();
        // Boxed: inline, the loop's state was laid out beside the other awaits' instead
        // of over them (1.5 KB for this future instead of 0.1 KB + 0.7 KB in the box).
        let code = Box::pin(self.event_loop(handle.queue())).await;
        let rest = handle.queue().close();
        Box::pin(self.close(code, rest)).await;
        Box::pin(self.cleanup()).await;
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
        let mut closing = self.closing.clone();
        let mut fired = false;
        let mut expiry_of: Option<Option<i64>> = None;
        loop {
            // Killed (slow consumer, rate limit…: the queue woke us) or shutting down.
            if let Some(code) = self.handle.close_code() {
                return code;
            }
            if *closing.borrow_and_update() {
                return close::GOING_AWAY;
            }
            if let Some(identity) = &self.identity {
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
                m = std::future::poll_fn(|cx| self.reader.poll_next(&mut self.io, cx)) => {
                    Wake::Incoming(m)
                }
                _ = timer.as_mut() => Wake::Timer,
            };
            let result = match wake {
                Wake::Ended => continue,
                Wake::Outbound(batch) => self.write_batch(batch).await,
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
                            Box::pin(self.send_error(None, err)).await
                        }
                        Incoming::Ping(payload) => {
                            Box::pin(self.write_frames(frame_writer::PONG, &[payload])).await
                        }
                        Incoming::Pong => Ok(()),
                        Incoming::Close(code) => {
                            // The connection ends here.
                            Box::pin(self.echo_close(code)).await;
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
                            Box::pin(self.write_frames(frame_writer::PING, &ping)).await
                        }
                        Some(Due::AuthTimeout) => {
                            let err = FrameError::new(
                                ErrorCode::Unauthenticated,
                                "no valid auth before the auth timeout",
                            );
                            let _ = Box::pin(self.send_error(None, err)).await;
                            return close::AUTH_TIMEOUT;
                        }
                        Some(Due::TokenExpired) => {
                            let err = FrameError::new(
                                ErrorCode::TokenExpired,
                                "token expired and was not refreshed",
                            );
                            let _ = Box::pin(self.send_error(None, err)).await;
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
                    .handle
                    .close_code()
                    .or(shutting_down.then_some(close::GOING_AWAY))
                    .unwrap_or(0);
            }
        }
    }

    /// When the current token stops being acceptable (PostgREST's 30 s leeway included);
    /// `None` for a token that never expires, or not before the clock runs out.
    fn token_deadline(&self) -> Option<Instant> {
        let exp = self.identity.as_ref()?.exp?;
        let remaining = exp
            .saturating_add(30)
            .saturating_sub(crate::auth::unix_now());
        Instant::now().checked_add(Duration::from_secs(remaining.max(0) as u64))
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        match protocol::parse(text) {
            Ok(request) => self.dispatch(request).await,
            Err((reference, err)) => self.send_error(reference.as_ref(), err).await,
        }
    }

    /// Writes one reply frame now.
    pub(crate) async fn reply(&mut self, frame: Utf8Bytes) -> Result<(), Closed> {
        Box::pin(self.write_frames(frame_writer::TEXT, std::slice::from_ref(&frame))).await
    }

    pub(crate) async fn send_error(
        &mut self,
        reference: Option<&serde_json::Value>,
        err: FrameError,
    ) -> Result<(), Closed> {
        metrics::counter!("pgchat_errors_total", "code" => err.code.as_str()).increment(1);
        self.reply(protocol::error_frame(reference, &err)).await
    }

    /// Counts a rate-limit refusal; too many in a minute ends the connection.
    pub(crate) fn strike(&mut self) -> bool {
        if self.strike_window.elapsed() > Duration::from_secs(60) {
            self.strikes = 0;
            self.strike_window = Instant::now();
        }
        self.strikes += 1;
        if self.strikes > MAX_STRIKES {
            self.handle.kill(close::RATE_LIMITED);
            return false;
        }
        true
    }

    /// Leaves every room (announcing departures) and forgets this socket.
    async fn cleanup(&mut self) {
        let Some(user) = self.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        let conn = self.handle.conn_id;
        // On shutdown the daemon clears all its presence at once (Presence::stop).
        let announce = !self.app.shutdown.is_cancelled();
        for room in self.rooms.take_all() {
            if self.app.hub.unsubscribe(room, conn) == PresenceChange::Departed && announce {
                self.app.presence.depart(room, user).await;
            }
        }
        self.app.hub.remove_user_socket(user, conn);
    }
}
