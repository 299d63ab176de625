//! What `scale` reads from PostgreSQL beside the sockets: presence rows during the join
//! storm, connections in use, and the sweep of a killed daemon's presence. All through
//! `--admin-url` (a superuser sees every session in `pg_stat_activity`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::seed;

pub async fn presence_rows(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one("select count(*) from pgchat.presence", &[])
        .await?
        .get(0))
}

/// `pgchat.presence_apply` calls (transactions of presence writes) as PostgreSQL counts
/// them; `None` unless `track_functions` is on. A function not called yet has no row.
/// Counts reach the view within a second or so of each transaction.
pub async fn presence_transactions(db: &tokio_postgres::Client) -> Option<i64> {
    let row = db
        .query_opt(
            "select coalesce((select calls from pg_stat_user_functions \
                              where schemaname = 'pgchat' and funcname = 'presence_apply'), 0) \
              where current_setting('track_functions') <> 'none'",
            &[],
        )
        .await
        .ok()??;
    Some(row.get(0))
}

/// Waits until the presence table holds at least `rows`, or `limit` passed; returns
/// when it got there (`None`: never) and the count last seen.
pub async fn wait_presence(
    db: &tokio_postgres::Client,
    rows: i64,
    limit: Duration,
) -> anyhow::Result<(Option<Instant>, i64)> {
    let deadline = Instant::now() + limit;
    loop {
        let n = presence_rows(db).await?;
        if n >= rows {
            return Ok((Some(Instant::now()), n));
        }
        if Instant::now() >= deadline {
            return Ok((None, n));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The most connections to this database seen at once, by kind.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Connections {
    pub max_total: i64,
    /// Running a statement or inside a transaction.
    pub max_busy: i64,
    /// pgchat's pools (`application_name` pgchat) and LISTEN connections.
    pub max_pool: i64,
    pub max_listeners: i64,
    /// Sessions waiting for PostgreSQL's one NOTIFY lock (a commit that notifies holds
    /// it through its WAL flush): `Lock`/`object` in `pg_stat_activity`.
    pub max_notify_lock_waits: i64,
    /// Sessions waiting for another transaction (e.g. a room row locked by a send).
    pub max_transaction_waits: i64,
    /// Sum over samples of the NOTIFY lock waiters, divided by the samples.
    pub mean_notify_lock_waits: f64,
    pub samples: u64,
    /// The server's `max_connections`.
    pub max_connections: i64,
}

/// Samples `pg_stat_activity` every second until `stop`.
pub fn sample_connections(
    db: Arc<tokio_postgres::Client>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Connections> {
    tokio::spawn(async move {
        let mut c = Connections::default();
        if let Ok(row) = db
            .query_one("select current_setting('max_connections')::int8", &[])
            .await
        {
            c.max_connections = row.get(0);
        }
        let sql = "select count(*), \
                   count(*) filter (where state <> 'idle'), \
                   count(*) filter (where application_name = 'pgchat'), \
                   count(*) filter (where application_name = 'pgchat-listener'), \
                   count(*) filter (where wait_event_type = 'Lock' and wait_event = 'object'), \
                   count(*) filter (where wait_event_type = 'Lock' \
                                      and wait_event = 'transactionid') \
                   from pg_stat_activity where datname = current_database()";
        let mut notify_waits = 0i64;
        loop {
            if let Ok(row) = db.query_one(sql, &[]).await {
                c.samples += 1;
                c.max_total = c.max_total.max(row.get(0));
                c.max_busy = c.max_busy.max(row.get(1));
                c.max_pool = c.max_pool.max(row.get(2));
                c.max_listeners = c.max_listeners.max(row.get(3));
                let waits: i64 = row.get(4);
                notify_waits += waits;
                c.max_notify_lock_waits = c.max_notify_lock_waits.max(waits);
                c.max_transaction_waits = c.max_transaction_waits.max(row.get(5));
                c.mean_notify_lock_waits =
                    (notify_waits as f64 / c.samples as f64 * 10.0).round() / 10.0;
            }
            tokio::select! {
                _ = stop.cancelled() => return c,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

/// The daemon a user's presence row was written by (its id in `pgchat.daemons`).
pub async fn daemon_of(db: &tokio_postgres::Client, user: i64) -> anyhow::Result<Option<String>> {
    Ok(db
        .query_opt(
            "select daemon_id::text from pgchat.presence where user_id = $1 limit 1",
            &[&user],
        )
        .await?
        .map(|r| r.get(0)))
}

pub async fn rows_of(db: &tokio_postgres::Client, daemon: &str) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "select count(*) from pgchat.presence where daemon_id = $1::text::uuid",
            &[&daemon],
        )
        .await?
        .get(0))
}

/// Seconds from `killed` until the daemon's presence rows and its heartbeat row are
/// gone (swept by a surviving daemon), polled every 250 ms; `None` after `limit`.
pub fn watch_sweep(
    admin_url: String,
    daemon: String,
    killed: Instant,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        let db = seed::connect(&admin_url).await.ok()?;
        while killed.elapsed() < limit {
            let rows = rows_of(&db, &daemon).await.ok()?;
            let alive: bool = db
                .query_one(
                    "select exists (select 1 from pgchat.daemons where id = $1::text::uuid)",
                    &[&daemon],
                )
                .await
                .ok()?
                .get(0);
            if rows == 0 && !alive {
                return Some(killed.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    })
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}
