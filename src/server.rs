//! Wiring: shared state, the accept loop, background tasks and graceful shutdown.
//!
//! `run(listener, config, shutdown)` takes the shutdown future as an argument so tests
//! start the real server on port 0 and stop it at will.

use std::collections::HashSet;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Ticket};
use crate::auth::{Identity, Verifier};
use crate::config::{Config, ConfigError};
use crate::db::{Db, DbError};
use crate::hub::Hub;
use crate::listener::{Listener, ListenerState};
use crate::presence::{Presence, TypingTracker, HEARTBEAT_EVERY};
use crate::protocol::{ErrorCode, FrameError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("accept failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything a connection needs, shared.
pub struct AppState {
    pub config: Config,
    pub verifier: Verifier,
    pub db: Db,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub typing: Arc<TypingTracker>,
    pub typing_throttle: Arc<crate::typing_throttle::TypingThrottle>,
    /// Per-user quota for chat writes and queries; `None` when RATE_LIMIT_PER_SEC=0.
    pub limiter: Option<DefaultKeyedRateLimiter<String>>,
    pub listener: Arc<ListenerState>,
    /// Cancelled on shutdown (background tasks).
    pub shutdown: CancellationToken,
    /// Becomes true on shutdown. Sessions watch this rather than a child token each: a
    /// `watch` receiver is a shared pointer and its check is lock-free.
    pub closing: tokio::sync::watch::Sender<bool>,
    pub tasks: TaskTracker,
    /// Bounds open connections (a slot for a connection's whole life), those not
    /// authenticated yet, and those per client address.
    pub admission: Arc<Admission>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    next_conn: AtomicU64,
    /// Roles already proven settable for `authenticator`, so auth needs no round trip.
    known_roles: Mutex<HashSet<String>>,
}

impl AppState {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Refuses a token whose role `authenticator` cannot switch to (missing or not
    /// granted), as PostgREST would on its first query.
    pub async fn check_role(&self, identity: &Identity) -> Result<(), FrameError> {
        if self.known_roles.lock().unwrap().contains(&identity.role) {
            return Ok(());
        }
        match self
            .db
            .as_user(identity, "/", "select null::json", &[])
            .await
        {
            Ok(_) => {
                self.known_roles
                    .lock()
                    .unwrap()
                    .insert(identity.role.clone());
                Ok(())
            }
            Err(DbError::Forbidden(_)) => Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("role `{}` is not allowed", identity.role),
            )),
            Err(e) => Err(crate::commands::db_error(e)),
        }
    }
}

/// Completed handshakes the kernel queues for `accept` (capped by `net.core.somaxconn`).
/// The usual default of 128 overflowed under a join storm (256 clients connecting at
/// once while both workers were busy): each overflow costs the client a 1 s SYN
/// retransmit (`nstat`: 143 `ListenOverflows` in one 10,000-socket run).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the WebSocket/HTTP listener with a backlog sized for connection storms.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted daemon can bind while the old one's connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` completes, then closes every socket with 1001 and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let state = Arc::new(build_state(config)?);
    // Register this daemon before any socket can mark a user present: presence rows of
    // an unknown daemon are swept by the others.
    if let Err(e) = state.presence.heartbeat().await {
        tracing::warn!(error = %e, "first presence heartbeat failed; retrying in the background");
    }
    let background = start_background(&state);
    tracing::info!(addr = %listener.local_addr()?, daemon = state.presence.daemon_id(), "pgchat listening");

    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting: at the cap the server simply stops accepting.
        let slot = tokio::select! {
            slot = state.admission.slot() => slot,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Refused before a byte is read: the socket is just closed, and its slot is free.
        let (ticket, evicted) = match state.admission.admit(slot, peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::debug!(%peer, %refusal, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        state
            .tasks
            .clone()
            .spawn(serve_http(stream, peer, ticket, evicted, state));
    }

    tracing::info!("shutting down");
    state.shutdown.cancel();
    state.closing.send_replace(true);
    state.tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 5 s");
    }
    if let Err(e) = state.presence.stop().await {
        tracing::warn!(error = %e, "could not clear presence on shutdown");
    }
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    state.db.close();
    Ok(())
}

/// Serves one connection's HTTP until it upgrades (the session then runs in a task of
/// its own), ends, is evicted, or misses its deadlines: the request headers within
/// `HEADER_TIMEOUT_SECS` and the upgrade within `UPGRADE_TIMEOUT_SECS` of the accept,
/// however slowly the bytes trickle in.
async fn serve_http(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    ticket: Ticket,
    evicted: CancellationToken,
    state: Arc<AppState>,
) {
    let upgrade_deadline = tokio::time::sleep(state.config.upgrade_timeout());
    let header_timeout = state.config.header_timeout();
    let shutdown = state.shutdown.clone();
    let slot = Arc::new(Mutex::new(Some(ticket)));
    let service = hyper::service::service_fn(move |req| {
        crate::http::handle(req, state.clone(), peer, slot.clone())
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => match r {
            Ok(()) => {}
            Err(e) if e.is_timeout() => {
                metrics::counter!("pgchat_preupgrade_timeouts_total").increment(1);
                tracing::debug!(%peer, "request headers not received in time");
            }
            Err(e) => tracing::debug!(%peer, error = %e, "http connection ended"),
        },
        _ = upgrade_deadline => {
            metrics::counter!("pgchat_preupgrade_timeouts_total").increment(1);
            tracing::debug!(%peer, "no websocket upgrade in time");
        }
        _ = evicted.cancelled() => tracing::debug!(%peer, "evicted before upgrading"),
        // A browser keeps its page's connection open, idle, for minutes: on shutdown it
        // is closed now (a request in flight is answered first), or shutdown would wait
        // for it.
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn build_state(config: Config) -> Result<AppState, ServerError> {
    let verifier = Verifier::new(&config)?;
    let db = Db::new(
        &config.database_url,
        config.db_pool_size,
        Duration::from_millis(config.db_timeout_ms),
    )?
    .with_user_concurrency(config.user_concurrency());
    let limiter = NonZeroU32::new(config.rate_limit_per_sec).map(|rate| {
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
        RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
    });
    Ok(AppState {
        verifier,
        presence: Arc::new(Presence::new(db.clone())),
        db,
        hub: Arc::new(Hub::for_queue(config.outbound_queue)),
        typing: Arc::new(TypingTracker::default()),
        typing_throttle: Arc::default(),
        limiter,
        listener: Arc::new(ListenerState::default()),
        shutdown: CancellationToken::new(),
        closing: tokio::sync::watch::Sender::new(false),
        tasks: TaskTracker::new(),
        admission: Arc::new(Admission::new(
            config.max_connections,
            config.max_unauthenticated(),
            config.max_connections_per_ip,
            config.trusted_proxies()?,
        )),
        metrics: crate::metrics::handle(),
        next_conn: AtomicU64::new(1),
        known_roles: Mutex::new(HashSet::new()),
        config,
    })
}

fn start_background(state: &Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    let cancel = state.shutdown.clone();
    let listener = Listener {
        url: state.config.database_url.clone(),
        channel: state.config.notify_channel.clone(),
        db: state.db.clone(),
        hub: state.hub.clone(),
        presence: state.presence.clone(),
        relay: crate::relay::Relay::new(
            state.db.clone(),
            state.hub.clone(),
            state.presence.clone(),
            state.typing.clone(),
            state.config.outbound_queue,
        ),
        state: state.listener.clone(),
    };
    let heartbeat_state = state.clone();
    let heartbeat_cancel = cancel.clone();
    let heartbeat = async move {
        let start = tokio::time::Instant::now() + HEARTBEAT_EVERY;
        let mut tick = tokio::time::interval_at(start, HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = heartbeat_cancel.cancelled() => return,
            }
            if let Err(e) = heartbeat_state.presence.heartbeat().await {
                tracing::warn!(error = %e, "presence heartbeat failed");
            }
            if let Some(limiter) = &heartbeat_state.limiter {
                limiter.retain_recent();
            }
        }
    };
    vec![
        tokio::spawn(listener.run(cancel.clone())),
        tokio::spawn(state.presence.clone().run_batcher(cancel.clone())),
        tokio::spawn(crate::relay::expire_typing(
            state.hub.clone(),
            state.typing.clone(),
            state.typing_throttle.clone(),
            cancel,
        )),
        tokio::spawn(heartbeat),
    ]
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
