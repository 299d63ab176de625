//! The daemon's shared state: what every connection, transport and background task
//! reads. It knows no transport and no command; the wiring (`server`) builds it once.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::auth::Verifier;
use crate::bus::BusStatus;
use crate::config::{Config, ConfigError};
use crate::db::{Db, DbError, ReadQueue};
use crate::hub::Hub;
use crate::presence::{Presence, TypingTracker};
use crate::relay::Wakes;
use crate::typing_throttle::TypingThrottle;
use crate::typing_writer::TypingWriter;

/// Connections of the background pool: the relay reads with one at a time, the typing
/// writer writes with one at a time.
pub const BACKGROUND_POOL_SIZE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Everything a connection needs, shared.
pub struct App {
    pub config: Config,
    pub verifier: Verifier,
    pub db: Db,
    /// The relay's and the typing writer's own connections (`pgchat-relay`): what every
    /// socket waits for never queues behind user calls in the main pool.
    pub background_db: Db,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub typing: Arc<TypingTracker>,
    pub typing_throttle: Arc<TypingThrottle>,
    /// Writes this daemon's typing changes in batches (one commit, one doorbell lock).
    pub typing_writer: Arc<TypingWriter>,
    /// Per-user quota for chat writes and queries; `None` when RATE_LIMIT_PER_SEC=0.
    pub limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Whether the bus is connected and answered lately (for /readyz).
    pub bus: Arc<BusStatus>,
    /// Rooms the relay should read once more (a join started following them).
    pub wakes: Arc<Wakes>,
    /// Joins' database reads, sent in batches on at most half the pool's connections
    /// (see `Ctx::join_call`).
    pub join_reads: Arc<ReadQueue>,
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
    pub(crate) known_roles: Mutex<HashSet<String>>,
}

impl App {
    /// Builds the state from a validated configuration; connects nothing yet (the pool
    /// connects on first use).
    pub fn new(config: Config) -> Result<App, AppError> {
        let verifier = Verifier::new(&config)?;
        let db = Db::new(
            &config.database_url,
            config.db_pool_size,
            Duration::from_millis(config.db_timeout_ms),
        )?
        .with_user_concurrency(config.user_concurrency());
        let background_db = Db::named(
            &config.database_url,
            "pgchat-relay",
            BACKGROUND_POOL_SIZE,
            Duration::from_millis(config.db_timeout_ms),
        )?
        .sharing_settings_with(&db);
        let limiter = NonZeroU32::new(config.rate_limit_per_sec).map(|rate| {
            let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Ok(App {
            verifier,
            presence: Arc::new(Presence::new(db.clone())),
            typing_writer: Arc::new(TypingWriter::new(background_db.clone())),
            background_db,
            db,
            hub: Arc::new(Hub::for_queue(config.outbound_queue)),
            typing: Arc::new(TypingTracker::new(config.typing_ttl())),
            typing_throttle: Arc::default(),
            limiter,
            bus: Arc::default(),
            wakes: Arc::default(),
            join_reads: ReadQueue::new(config.db_pool_size / 2),
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

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
