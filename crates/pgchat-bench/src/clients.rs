//! The fleet of connections: shared options and counters, opening N connections with a
//! bounded number of attempts in flight, waiting for deliveries to drain, and closing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Cmd, ConnResult};

/// One server under test: its URL and resolved address.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Server {
    pub url: String,
    pub addr: SocketAddr,
}

pub struct Options {
    /// Socket i connects to server i mod len (never empty).
    pub servers: Vec<Server>,
    pub sources: u8,
    pub wait_join: bool,
    pub acks: bool,
    pub timeout: Duration,
    pub pad: usize,
    pub run: String,
    /// A socket the server drops resumes on another server (`scale`).
    pub reconnect: bool,
}

/// Live totals over every connection.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Acks, or with `--no-acks` the sender's own deliveries: what paces `persist`.
    pub confirmed: AtomicU64,
    /// Messages the server answered with an error.
    pub rejected: AtomicU64,
    /// Distinct deliveries (counted per shard: every delivery adds to it).
    pub unique: ShardedCounter,
    /// Deliveries owed: members of the room for every message sent and not rejected.
    pub expected: AtomicI64,
    pub typing_received: AtomicU64,
    pub closed_by_server: AtomicU64,
}

impl Shared {
    pub fn members_of(&self, room: i64) -> i64 {
        self.members
            .get(&room)
            .map_or(0, |m| m.load(Ordering::Relaxed) as i64)
    }
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn expected(&self) -> u64 {
        self.expected.load(Ordering::Relaxed).max(0) as u64
    }
}

pub struct Shared {
    pub opts: Options,
    pub counters: Counters,
    /// Connections that joined each room (counted when ready): the deliveries each
    /// message to the room is owed.
    pub members: HashMap<i64, AtomicU64>,
    pub stop: CancellationToken,
    /// Resumes in flight at once (--connect-concurrency).
    pub gate: Arc<Semaphore>,
}

/// A counter bumped on every delivery from every worker thread: one shared atomic
/// bounced its cache line between the cores on each of 100,000 deliveries a second.
#[derive(Default)]
pub struct ShardedCounter {
    shards: [PaddedCounter; 16],
}

#[derive(Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl ShardedCounter {
    /// Adds `n` on the shard of connection `index`.
    pub fn add(&self, index: u64, n: u64) {
        let shard = &self.shards[index as usize % self.shards.len()];
        shard.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// One connection to open: the sender index carried in its messages, its token and
/// the rooms it joins.
pub struct Spec {
    pub index: u64,
    pub token: String,
    pub rooms: Vec<i64>,
}

pub struct Handle {
    pub tx: mpsc::UnboundedSender<Cmd>,
    join: JoinHandle<ConnResult>,
}

pub struct Fleet {
    pub handles: Vec<Handle>,
    pub connected: usize,
    pub failed: usize,
    /// Per handle: whether it became ready.
    pub ready: Vec<bool>,
    /// The first few connection errors, for the report.
    pub errors: Vec<String>,
    /// From the first attempt to the last connection ready.
    pub elapsed: Duration,
}

/// Resolves the host and port of a `ws://` URL.
pub async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .context("--url must be a ws:// URL (TLS is not supported)")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut addrs = tokio::net::lookup_host(with_port.as_str())
        .await
        .with_context(|| format!("resolving {with_port}"))?;
    addrs
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{with_port} has no IPv4 address"))
}

/// Resolves every URL; at least one is required.
pub async fn resolve_all(urls: &[String]) -> anyhow::Result<Vec<Server>> {
    anyhow::ensure!(!urls.is_empty(), "--url is required");
    let mut servers = Vec::with_capacity(urls.len());
    for url in urls {
        let addr = resolve(url).await?;
        servers.push(Server {
            url: url.clone(),
            addr,
        });
    }
    Ok(servers)
}

impl Options {
    /// The server socket `index` connects to first: sockets are spread evenly.
    pub fn home(&self, index: u64) -> usize {
        (index % self.servers.len() as u64) as usize
    }
}

/// Opens every connection, at most `concurrency` attempts in flight, and waits until
/// each is ready (authenticated and joined) or has failed.
pub async fn open_all(shared: &Arc<Shared>, specs: Vec<Spec>, concurrency: usize) -> Fleet {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(specs.len());
    let mut readies = Vec::with_capacity(specs.len());
    for spec in specs {
        let permit = gate.clone().acquire_owned().await.expect("semaphore open");
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let join = tokio::spawn(conn::run(shared.clone(), spec, rx, permit, ready_tx));
        handles.push(Handle { tx, join });
        readies.push(ready_rx);
    }
    let (mut connected, mut failed, mut errors) = (0, 0, Vec::new());
    let mut ready_flags = Vec::with_capacity(readies.len());
    for ready in readies {
        let outcome = ready.await;
        ready_flags.push(matches!(outcome, Ok(Ok(()))));
        match outcome {
            Ok(Ok(())) => connected += 1,
            Ok(Err(e)) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
            Err(_) => failed += 1,
        }
    }
    Fleet {
        handles,
        connected,
        failed,
        ready: ready_flags,
        errors,
        elapsed: started.elapsed(),
    }
}

/// Waits until `scheduled` messages were sent and every owed delivery (and ack)
/// arrived, or `limit` passed.
pub async fn drain(shared: &Shared, scheduled: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let c = &shared.counters;
        let sent = Counters::get(&c.sent);
        let answered = Counters::get(&c.acked) + Counters::get(&c.rejected);
        let acks_done = !shared.opts.acks || answered >= sent;
        if sent >= scheduled && c.unique.sum() >= c.expected() && acks_done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops every connection and collects what each saw.
pub async fn close_all(shared: &Shared, fleet: &mut Fleet) -> Vec<ConnResult> {
    shared.stop.cancel();
    let mut results = Vec::with_capacity(fleet.handles.len());
    for h in fleet.handles.drain(..) {
        drop(h.tx);
        if let Ok(r) = h.join.await {
            results.push(r);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_ws_urls() {
        assert_eq!(
            resolve("ws://127.0.0.1:3001/ws").await.unwrap(),
            "127.0.0.1:3001".parse().unwrap()
        );
        assert_eq!(
            resolve("ws://127.0.0.1?token=x").await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert!(resolve("wss://127.0.0.1/").await.is_err());
    }
}
