//! `scale`: N sockets over several servers, held by worker processes. Seeds users in
//! rooms of M consecutive members (socket i goes to server i mod S, so every room spans
//! the servers), opens every share at once, measures the join storm and memory, runs
//! messages, typing and API requests, SIGKILLs one server mid-traffic if asked and
//! follows its sockets' resumes and its presence sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{Common, ScaleArgs};
use crate::clients;
use crate::limits;
use crate::proto::{Command, Job, JobSpec, Load, Reply, Status};
use crate::seed::{self, Seeded};
use crate::workers::{self, Worker};

use super::scale_db as db;
use super::scale_report::{DaemonFigures, KillFigures, Merged, PresenceStorm, ScaleReport};

/// Sockets per worker by default: four workers for 50,000, each far under 20,000 files.
const PER_WORKER: usize = 12_500;

pub async fn run(common: &Common, a: &ScaleArgs) -> anyhow::Result<ScaleReport> {
    if a.connections == 0 || a.room_size == 0 || a.rate < 0.0 || a.duration <= 0.0 {
        bail!("connections, room size and duration must be positive");
    }
    let secret = common
        .jwt_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .context("--jwt-secret (or JWT_SECRET) is required: the server's HS256 secret")?;
    let servers = clients::resolve_all(&common.url).await?;
    let pids = &common.server_pid;
    if !pids.is_empty() && pids.len() != servers.len() {
        bail!("give one --server-pid per --url, in the same order");
    }
    let kill = match a.kill_at {
        Some(at) => {
            if pids.is_empty() || servers.len() < 2 {
                bail!("--kill-at needs two or more --url and their --server-pid");
            }
            let k = a.kill.unwrap_or(servers.len() - 1);
            if k >= servers.len() {
                bail!("--kill {k}: there are only {} servers", servers.len());
            }
            Some((k, at.max(0.0)))
        }
        None => None,
    };
    let load_before = db::load_average();
    let started = Instant::now();
    let layout = seed::consecutive_rooms(a.connections, a.room_size);
    let seeded = seed::seed(&common.admin_url, secret.as_bytes(), a.connections, &layout).await?;
    let probe = Arc::new(seed::connect(&common.admin_url).await?);

    let n_workers = a
        .workers
        .unwrap_or(a.connections.div_ceil(PER_WORKER))
        .clamp(1, a.connections);
    let jobs = shares(&seeded, n_workers, |specs| Job {
        servers: servers.clone(),
        sources: common.source_addrs,
        acks: !common.no_acks,
        timeout_s: common.connect_timeout,
        pad: common.pad,
        run: seeded.run.clone(),
        reconnect: true,
        connect_concurrency: common.connect_concurrency,
        specs,
    });
    let local_rooms: Vec<usize> = jobs.iter().map(rooms_in).collect();
    let mut pool = (0..n_workers)
        .map(|_| Worker::spawn())
        .collect::<anyhow::Result<Vec<_>>>()?;

    // The join storm.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before: Vec<Option<u64>> = pids.iter().map(|p| limits::rss_bytes(*p)).collect();
    let presence_base = db::presence_rows(&probe).await?;
    let tx_base = db::presence_transactions(&probe).await;
    let storm = Instant::now();
    let replies = workers::all(&mut pool, jobs.into_iter().map(Command::Job).collect()).await?;
    let connect_secs = storm.elapsed().as_secs_f64();
    let mut merged = Merged::default();
    let mut per_server = vec![0u64; servers.len()];
    let mut members: HashMap<i64, u64> = HashMap::new();
    for r in replies {
        let Reply::Ready(r) = r else {
            bail!("a worker answered the job with {r:?}")
        };
        merged.ready(&r);
        for (s, n) in r.per_server.iter().enumerate() {
            per_server[s] += n;
        }
        for (room, n) in r.rooms {
            *members.entry(room).or_default() += n;
        }
    }
    let joined_rows: u64 = members.values().sum();
    let (caught_up, rows_seen) = db::wait_presence(
        &probe,
        presence_base + joined_rows as i64,
        Duration::from_secs(60),
    )
    .await?;
    let presence = PresenceStorm::new(
        rows_seen - presence_base,
        caught_up.map(|t| (t - storm).as_secs_f64()),
        connect_secs,
    );
    // Memory once the storm settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after: Vec<Option<u64>> = pids.iter().map(|p| limits::rss_bytes(*p)).collect();
    let rooms_total: Vec<(i64, u64)> = members.into_iter().collect();
    let acks = workers::all(
        &mut pool,
        (0..n_workers)
            .map(|_| Command::Members {
                rooms: rooms_total.clone(),
            })
            .collect(),
    )
    .await?;
    debug_assert!(acks.iter().all(|r| matches!(r, Reply::Ok)));

    // The load, and the kill in its middle.
    let stop_sampling = CancellationToken::new();
    let sampler = db::sample_connections(probe.clone(), stop_sampling.clone());
    let total_rooms = layout.len().max(1) as f64;
    let loads: Vec<Command> = local_rooms
        .iter()
        .map(|&r| {
            let share = r as f64 / total_rooms;
            Command::Load(Load {
                rate: a.rate * share,
                duration_s: a.duration,
                typing_period_s: a.typing_period,
                api_rate: a.api_rate * share,
            })
        })
        .collect();
    for (w, load) in pool.iter_mut().zip(&loads) {
        w.send(load).await?;
    }
    let load_start = Instant::now();
    let mut kill_figures = None;
    let mut sweep = None;
    // Function counts reach the view when a backend flushes its statistics (at most
    // once a second while busy, later when idle): read them well after the storm, and
    // before a kill's resumes write presence again.
    let mut tx_after = None;
    if let Some((k, at)) = kill {
        tokio::time::sleep(Duration::from_secs_f64(at.min(a.duration))).await;
        tx_after = db::presence_transactions(&probe).await;
        let (figures, watch) =
            kill_one(common, a, &seeded, &probe, k, pids[k], per_server[k]).await?;
        kill_figures = Some(figures);
        sweep = watch;
    }
    let mut scheduled = 0;
    for w in pool.iter_mut() {
        match w.recv().await? {
            Reply::Loaded { scheduled: n } => scheduled += n,
            other => bail!("a worker answered the load with {other:?}"),
        }
    }
    let send_secs = load_start.elapsed().as_secs_f64();
    if kill.is_none() {
        tx_after = db::presence_transactions(&probe).await;
    }
    drain(&mut pool, scheduled, common.drain()).await?;
    stop_sampling.cancel();
    let connections = sampler.await.unwrap_or_default();
    let rss_end: Vec<Option<u64>> = pids.iter().map(|p| limits::rss_bytes(*p)).collect();
    let killed = kill.map(|(k, _)| k);
    let mut metrics = Vec::with_capacity(servers.len());
    for (i, s) in servers.iter().enumerate() {
        let scraped = if Some(i) == killed {
            None
        } else {
            super::scale_metrics::scrape(&s.url).await.ok()
        };
        metrics.push(scraped);
    }
    let replies = workers::all(&mut pool, (0..n_workers).map(|_| Command::Stop).collect()).await?;
    for w in pool {
        w.finish().await;
    }
    for r in replies {
        let Reply::Done(done) = r else {
            bail!("a worker answered stop with {r:?}")
        };
        merged.done(&done)?;
    }
    if let (Some(figures), Some(watch)) = (kill_figures.as_mut(), sweep) {
        figures.presence_swept_after_s = watch.await.ok().flatten();
        figures.finish(&merged);
    }

    let daemons = servers
        .iter()
        .enumerate()
        .map(|(i, s)| DaemonFigures {
            url: s.url.clone(),
            pid: pids.get(i).copied(),
            sockets: per_server[i],
            rss_before: rss_before.get(i).copied().flatten(),
            rss_after: rss_after.get(i).copied().flatten(),
            rss_end: rss_end.get(i).copied().flatten(),
            metrics: metrics[i].take(),
        })
        .collect();
    let parameters = json!({
        "connections": a.connections,
        "room_size": a.room_size,
        "rooms": layout.len(),
        "servers": servers.len(),
        "workers": n_workers,
        "rate": a.rate,
        "duration_s": a.duration,
        "typing_period_s": a.typing_period,
        "api_rate": a.api_rate,
        "kill_at_s": a.kill_at,
        "source_addrs": common.source_addrs,
        "connect_concurrency": common.connect_concurrency,
    });
    let mut presence = presence;
    presence.transactions = match (tx_base, tx_after) {
        (Some(b), Some(e)) => Some(e - b),
        _ => None,
    };
    Ok(ScaleReport::build(
        seeded.run.clone(),
        parameters,
        a,
        merged,
        connect_secs,
        send_secs,
        daemons,
        presence,
        connections,
        kill_figures,
        [load_before, db::load_average()],
        started.elapsed().as_secs_f64(),
    ))
}

/// Splits the users into `n` shares of whole rooms (so each worker sends to its own
/// rooms), each socket keeping its fleet-wide index.
fn shares(seeded: &Seeded, n: usize, job: impl Fn(Vec<JobSpec>) -> Job) -> Vec<Job> {
    let mut rooms_of: Vec<Vec<i64>> = vec![Vec::new(); seeded.users.len()];
    let mut first_room_of = vec![usize::MAX; seeded.users.len()];
    for (r, room) in seeded.rooms.iter().enumerate() {
        for &u in &room.members {
            rooms_of[u].push(room.id);
            first_room_of[u] = first_room_of[u].min(r);
        }
    }
    let rooms = seeded.rooms.len().max(1);
    let mut specs: Vec<Vec<JobSpec>> = (0..n).map(|_| Vec::new()).collect();
    for (i, (u, rooms_here)) in seeded.users.iter().zip(rooms_of).enumerate() {
        let r = first_room_of[i].min(rooms - 1);
        let w = r * n / rooms;
        specs[w].push(JobSpec {
            index: i as u64,
            token: u.token.clone(),
            rooms: rooms_here,
        });
    }
    specs.into_iter().map(job).collect()
}

fn rooms_in(job: &Job) -> usize {
    let mut rooms: Vec<i64> = job
        .specs
        .iter()
        .flat_map(|s| s.rooms.iter().copied())
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    rooms.len()
}

/// SIGKILLs server `k` and starts watching its presence sweep.
async fn kill_one(
    common: &Common,
    a: &ScaleArgs,
    seeded: &Seeded,
    probe: &tokio_postgres::Client,
    k: usize,
    pid: u32,
    sockets: u64,
) -> anyhow::Result<(KillFigures, Option<tokio::task::JoinHandle<Option<f64>>>)> {
    let n = common.url.len() as u64;
    // A user whose socket started on server k: its presence row names k's daemon id.
    let user = (0..seeded.users.len() as u64)
        .find(|i| i % n == k as u64)
        .map(|i| seeded.users[i as usize].id);
    let daemon = match user {
        Some(u) => db::daemon_of(probe, u).await?,
        None => None,
    };
    let rows = match &daemon {
        Some(d) => db::rows_of(probe, d).await?,
        None => 0,
    };
    // SAFETY: kill(2) with a PID the operator gave for this server.
    let killed_ok = unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0;
    let killed = Instant::now();
    let killed_unix = crate::frames::unix_nanos();
    if !killed_ok {
        bail!("could not SIGKILL server {k} (pid {pid})");
    }
    let watch = daemon.clone().map(|d| {
        db::watch_sweep(
            common.admin_url.clone(),
            d,
            killed,
            Duration::from_secs_f64(a.sweep_wait.max(a.sweep_bound)),
        )
    });
    let figures = KillFigures {
        server: k,
        pid,
        url: common.url[k].clone(),
        at_s: a.kill_at.unwrap_or(0.0),
        killed_unix_ns: killed_unix,
        daemon_id: daemon,
        presence_rows: rows,
        sockets,
        sweep_bound_s: a.sweep_bound,
        ..KillFigures::default()
    };
    Ok((figures, watch))
}

/// Waits until every worker sent what it scheduled, every owed delivery arrived and
/// every message was answered, or `limit` passed.
async fn drain(pool: &mut [Worker], scheduled: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let mut total = Status::default();
        for r in workers::all(pool, (0..pool.len()).map(|_| Command::Status).collect()).await? {
            if let Reply::Status(s) = r {
                total.sent += s.sent;
                total.acked += s.acked;
                total.rejected += s.rejected;
                total.expected += s.expected;
                total.unique += s.unique;
            }
        }
        let settled = total.sent >= scheduled
            && total.unique >= total.expected
            && total.acked + total.rejected >= total.sent;
        if settled || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
