//! One WebSocket connection: authentication state, the event loop that reads client
//! frames, writes queued hub events in batches, pings, and enforces the deadlines
//! (auth timeout, token expiry, idle timeout). Commands live in `commands.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::Identity;
use crate::frame_writer;
use crate::hub::{PresenceChange, SessionHandle};
use crate::outbound::Outbound;
use crate::protocol::{self, close, ErrorCode, FrameError, RoomId};
use crate::server::AppState;

/// Hub events written per flush.
const WRITE_BATCH: usize = 64;
/// How long a closing handshake or a single write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rate-limit refusals tolerated per minute before the connection is closed.
const MAX_STRIKES: u32 = 10;

/// The connection is over; stop the loop.
#[derive(Debug)]
pub struct Closed;

pub struct Session<S> {
    pub(crate) app: Arc<AppState>,
    pub(crate) ws: WebSocketStream<S>,
    pub(crate) handle: Arc<SessionHandle>,
    pub(crate) kill: CancellationToken,
    pub(crate) identity: Option<Identity>,
    /// Rooms this socket joined (the hub may have evicted some since).
    pub(crate) rooms: HashSet<RoomId>,
    /// When this socket last relayed `isTyping: true` per room (throttling).
    pub(crate) typing_sent: HashMap<RoomId, Instant>,
    pub(crate) strikes: u32,
    strike_window: Instant,
}

enum Wake {
    Killed,
    Outbound(Vec<Utf8Bytes>),
    Incoming(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Ping,
    AuthTimeout,
    TokenExpired,
    Idle,
}

pub async fn run<S>(ws: WebSocketStream<S>, app: Arc<AppState>, initial_token: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn_id = app.next_conn_id();
    let queue = Arc::new(Outbound::new(app.config.outbound_queue));
    let kill = app.shutdown.child_token();
    let handle = Arc::new(SessionHandle::new(conn_id, queue.clone(), kill.clone()));
    let mut session = Session {
        app: app.clone(),
        ws,
        handle,
        kill,
        identity: None,
        rooms: HashSet::new(),
        typing_sent: HashMap::new(),
        strikes: 0,
        strike_window: Instant::now(),
    };
    metrics::gauge!("pgchat_connections").increment(1.0);
    // Every log line of this connection carries its id.
    let span = tracing::info_span!("conn", id = conn_id);
    async move {
        tracing::debug!("connected");
        if let Some(token) = initial_token {
            let _ = Box::pin(session.authenticate(None, &token)).await;
        }
        let code = session.event_loop(&queue).await;
        queue.close();
        Box::pin(session.close(code)).await;
        Box::pin(session.cleanup()).await;
        tracing::debug!(code, "disconnected");
    }
    .instrument(span)
    .await;
    metrics::gauge!("pgchat_connections").decrement(1.0);
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Runs until the connection ends; returns the close code to send (0: none).
    async fn event_loop(&mut self, queue: &Outbound) -> u16 {
        let config = &self.app.config;
        let started = Instant::now();
        let idle_timeout = config.idle_timeout();
        let mut ping =
            tokio::time::interval_at(started + config.ping_interval(), config.ping_interval());
        let far = started + Duration::from_secs(86400 * 365);
        // The deadlines and the kill switch are built once and reset, not rebuilt on every
        // wake-up: a busy socket wakes once per batch of frames.
        let killed = self.kill.clone().cancelled_owned();
        let auth_timeout = tokio::time::sleep_until(started + config.auth_timeout());
        let token_expiry = tokio::time::sleep_until(far);
        let idle = tokio::time::sleep_until(started + idle_timeout);
        tokio::pin!(killed, auth_timeout, token_expiry, idle);
        let mut expiry_of: Option<i64> = None;
        loop {
            let authed = self.identity.is_some();
            let exp = self.identity.as_ref().and_then(|i| i.exp);
            if exp != expiry_of {
                token_expiry
                    .as_mut()
                    .reset(self.token_deadline().unwrap_or(far));
                expiry_of = exp;
            }
            let wake = tokio::select! {
                biased;
                _ = killed.as_mut() => Wake::Killed,
                batch = queue.pop_batch(WRITE_BATCH) => Wake::Outbound(batch),
                m = self.ws.next() => Wake::Incoming(m),
                _ = ping.tick() => Wake::Ping,
                _ = auth_timeout.as_mut(), if !authed => Wake::AuthTimeout,
                _ = token_expiry.as_mut(), if authed => Wake::TokenExpired,
                _ = idle.as_mut() => Wake::Idle,
            };
            let result = match wake {
                Wake::Killed => return self.handle.close_code().unwrap_or(close::GOING_AWAY),
                Wake::Outbound(batch) => self.write_batch(batch).await,
                Wake::Incoming(None) => return 0,
                Wake::Incoming(Some(Err(tungstenite::Error::Capacity(_)))) => {
                    return close::MESSAGE_TOO_BIG
                }
                Wake::Incoming(Some(Err(_))) => return 0,
                Wake::Incoming(Some(Ok(message))) => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    match message {
                        // Boxed: command futures are large and short-lived; keeping them
                        // out of the connection's own future keeps idle sockets small.
                        Message::Text(text) => Box::pin(self.on_text(text.as_str())).await,
                        Message::Binary(_) => {
                            self.send_error(
                                None,
                                FrameError::invalid("binary frames are not supported"),
                            )
                            .await
                        }
                        Message::Close(_) => return 0,
                        _ => Ok(()),
                    }
                }
                Wake::Ping => {
                    Box::pin(self.write_frames(frame_writer::PING, &[Utf8Bytes::default()])).await
                }
                Wake::AuthTimeout => {
                    let err = FrameError::new(
                        ErrorCode::Unauthenticated,
                        "no valid auth before the auth timeout",
                    );
                    let _ = self.send_error(None, err).await;
                    return close::AUTH_TIMEOUT;
                }
                Wake::TokenExpired => {
                    let err = FrameError::new(
                        ErrorCode::TokenExpired,
                        "token expired and was not refreshed",
                    );
                    let _ = self.send_error(None, err).await;
                    return close::TOKEN_EXPIRED;
                }
                Wake::Idle => return close::IDLE_TIMEOUT,
            };
            if result.is_err() {
                return self.handle.close_code().unwrap_or(0);
            }
        }
    }

    /// When the current token stops being acceptable (PostgREST's 30 s leeway included).
    fn token_deadline(&self) -> Option<Instant> {
        let exp = self.identity.as_ref()?.exp?;
        let remaining = exp + 30 - crate::auth::unix_now();
        Some(Instant::now() + Duration::from_secs(remaining.max(0) as u64))
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        match protocol::parse(text) {
            Ok(request) => self.dispatch(request).await,
            Err((reference, err)) => self.send_error(reference.as_ref(), err).await,
        }
    }

    async fn write_batch(&mut self, batch: Vec<Utf8Bytes>) -> Result<(), Closed> {
        // Boxed: the write's state (timer, iovecs) lives only while writing, not in
        // every idle connection's future.
        Box::pin(self.write_frames(frame_writer::TEXT, &batch)).await
    }

    /// Writes frames with [`frame_writer`] after anything tungstenite still holds (a
    /// pong), racing the kill switch and a timeout so a stuck peer cannot hold the
    /// session.
    async fn write_frames(&mut self, opcode: u8, payloads: &[Utf8Bytes]) -> Result<(), Closed> {
        let kill = self.kill.clone();
        let ws = &mut self.ws;
        let write = async move {
            ws.flush().await.map_err(std::io::Error::other)?;
            frame_writer::write_frames(ws.get_mut(), opcode, payloads).await
        };
        tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
                Ok(Ok(())) => Ok(()),
                _ => Err(Closed),
            },
            _ = kill.cancelled() => Err(Closed),
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

    async fn close(&mut self, code: u16) {
        if code == 0 {
            return;
        }
        let reason = match code {
            close::GOING_AWAY => "server shutting down",
            close::AUTH_TIMEOUT => "authentication timeout",
            close::TOKEN_EXPIRED => "token expired",
            close::RATE_LIMITED => "too many requests",
            close::SLOW_CONSUMER => "client too slow to keep up",
            close::IDLE_TIMEOUT => "idle timeout",
            close::MESSAGE_TOO_BIG => "frame too large",
            _ => "internal error",
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        // Send Close, then read until the peer's Close or a short timeout.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            self.ws.send(Message::Close(Some(frame))).await?;
            while let Some(m) = self.ws.next().await {
                if matches!(m?, Message::Close(_)) {
                    break;
                }
            }
            Ok::<(), tokio_tungstenite::tungstenite::Error>(())
        })
        .await;
    }

    /// Leaves every room (announcing departures) and forgets this socket.
    async fn cleanup(&mut self) {
        let Some(user) = self.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        let conn = self.handle.conn_id;
        // On shutdown the daemon clears all its presence at once (Presence::stop).
        let announce = !self.app.shutdown.is_cancelled();
        for room in std::mem::take(&mut self.rooms) {
            if self.app.hub.unsubscribe(room, conn) == PresenceChange::Departed && announce {
                self.app.presence.depart(room, user).await;
            }
        }
        self.app.hub.remove_user_socket(user, conn);
    }
}
