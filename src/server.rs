//! Wiring: the accept loop, the bus and the relay, background tasks and graceful
//! shutdown.
//!
//! `run(listener, config, shutdown)` takes the shutdown future as an argument so tests
//! start the real server on port 0 and stop it at will; [`run_with_bus`] lets them pick
//! the bus too.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::admission::Ticket;
use crate::app::{App, AppError};
use crate::bus::pg::PgBus;
use crate::bus::Bus;
use crate::config::Config;
use crate::presence::HEARTBEAT_EVERY;
use crate::relay::Relay;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("accept failed: {0}")]
    Io(#[from] std::io::Error),
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
/// Doorbells come from PostgreSQL LISTEN on `NOTIFY_CHANNEL`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with_bus(listener, config, shutdown, |app| PgBus {
        url: app.config.database_url.clone(),
        channel: app.config.notify_channel.clone(),
        db: app.db.clone(),
    })
    .await
}

/// [`run`], with doorbells from the bus `bus` makes for the daemon's state.
pub async fn run_with_bus<B: Bus>(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    bus: impl FnOnce(&App) -> B,
) -> Result<(), ServerError> {
    let state = Arc::new(App::new(config)?);
    let bus = bus(&state);
    // Register this daemon before any socket can mark a user present: presence rows of
    // an unknown daemon are swept by the others.
    if let Err(e) = state.presence.heartbeat().await {
        tracing::warn!(error = %e, "first presence heartbeat failed; retrying in the background");
    }
    let background = start_background(&state, bus);
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
    state.background_db.close();
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
    state: Arc<App>,
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

fn start_background(state: &Arc<App>, bus: impl Bus) -> Vec<tokio::task::JoinHandle<()>> {
    let cancel = state.shutdown.clone();
    let relay = Relay::new(
        state.background_db.clone(),
        state.hub.clone(),
        state.presence.clone(),
        state.typing.clone(),
        state.config.outbound_queue,
        state.wakes.clone(),
    );
    let (bells, signals) = crate::bus::channel();
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
            crate::memory::return_free_memory();
            if let Err(e) = heartbeat_state.presence.heartbeat().await {
                tracing::warn!(error = %e, "presence heartbeat failed");
            }
            if let Some(limiter) = &heartbeat_state.limiter {
                limiter.retain_recent();
            }
        }
    };
    vec![
        tokio::spawn(bus.run(bells, state.bus.clone(), cancel.clone())),
        tokio::spawn(relay.run(signals, cancel.clone())),
        tokio::spawn(state.presence.clone().run_batcher(cancel.clone())),
        tokio::spawn({
            let writer = state.typing_writer.clone();
            let cancel = cancel.clone();
            async move { writer.run(cancel).await }
        }),
        tokio::spawn(crate::relay::expire_typing(
            state.hub.clone(),
            state.typing.clone(),
            state.typing_throttle.clone(),
            cancel,
        )),
        tokio::spawn(heartbeat),
        tokio::spawn(crate::memory::trim_after_storms(
            state.hub.clone(),
            state.shutdown.clone(),
        )),
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
