//! `persist`: K senders, each in its own room, sending as fast as acks allow (a window
//! of W in flight) for D seconds: sustained persisted messages/s. In the same run, the
//! identical transaction straight over tokio-postgres is the limit. Both phases run
//! in R rounds, alternating which goes first.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::cli::Common;
use crate::clients::{self, Counters, Fleet, Shared};
use crate::conn::Cmd;
use crate::limits;
use crate::report::{round1, Report};
use crate::seed::Seeded;

use super::raw::{self, RawSender};

pub async fn run(
    common: &Common,
    senders: usize,
    window: usize,
    duration: f64,
    rounds: usize,
    limit_db: Option<tokio_postgres::Config>,
) -> anyhow::Result<Report> {
    if senders == 0 || window == 0 || duration <= 0.0 || rounds == 0 {
        bail!("senders, window, duration and rounds must be positive");
    }
    // Rooms 0..K are the senders' rooms on the server; rooms K..2K take the raw
    // transactions, joined by no socket, so the raw phase costs the server nothing.
    let layout: Vec<Vec<usize>> = (0..2 * senders).map(|i| vec![i % senders]).collect();
    let setup = super::setup(common, senders, &layout).await?;
    let mut fleet = setup.open_joining(common, senders).await?;
    let phase = Duration::from_secs_f64(duration);
    let started = Instant::now();
    let cpu = limits::CpuMark::now(common.server_pid());

    let (mut confirmed, mut server_secs) = (0u64, 0.0);
    let (mut committed, mut raw_secs) = (0u64, 0.0);
    for round in 0..rounds {
        for step in 0..2 {
            let server_first = round % 2 == 0;
            if (step == 0) == server_first {
                let (n, secs) =
                    server_phase(&setup.shared, &fleet, &setup.seeded, window, phase).await;
                confirmed += n;
                server_secs += secs;
            } else if let Some(config) = &limit_db {
                let senders = raw_senders(&setup.seeded, round);
                let (n, secs) = raw::limit(config, &setup.seeded.run, senders, phase).await?;
                committed += n;
                raw_secs += secs;
            }
        }
    }
    clients::drain(&setup.shared, 0, common.drain()).await;
    let (server_cpu, bench_cpu) = cpu.since(common.server_pid());
    let results = clients::close_all(&setup.shared, &mut fleet).await;

    let parameters = json!({
        "senders": senders,
        "window": window,
        "duration_s": duration,
        "rounds": rounds,
        "pad": common.pad,
        "acks": !common.no_acks,
        "limit": limit_db.is_some(),
    });
    let mut report = Report::collect("persist", parameters, &setup.shared, &fleet, &results);
    let rate = confirmed as f64 / server_secs;
    report.msgs_per_s = Some(round1(rate));
    report.deliveries_per_s = Some(round1(report.delivered as f64 / server_secs));
    if raw_secs > 0.0 {
        let limit = committed as f64 / raw_secs;
        report.limit_msgs_per_s = Some(round1(limit));
        if limit > 0.0 {
            report.limit_ratio = Some((rate / limit * 1000.0).round() / 1000.0);
        }
    }
    report.server_cpu_s = server_cpu;
    report.bench_cpu_s = bench_cpu;
    report.duration_s = round1(started.elapsed().as_secs_f64());
    Ok(report)
}

/// Every connection keeps `window` messages in flight for `phase`; returns the
/// messages confirmed within it and its length in seconds.
async fn server_phase(
    shared: &Shared,
    fleet: &Fleet,
    seeded: &Seeded,
    window: usize,
    phase: Duration,
) -> (u64, f64) {
    // Let the previous phase's last answers arrive first.
    clients::drain(shared, 0, Duration::from_secs(2)).await;
    let before = Counters::get(&shared.counters.confirmed);
    let start = Instant::now();
    let until = start + phase;
    for (h, room) in fleet.handles.iter().zip(&seeded.rooms) {
        let _ = h.tx.send(Cmd::Auto {
            room: room.id,
            window,
            until,
        });
    }
    tokio::time::sleep_until(until.into()).await;
    let confirmed = Counters::get(&shared.counters.confirmed) - before;
    (confirmed, start.elapsed().as_secs_f64())
}

fn raw_senders(seeded: &Seeded, round: usize) -> Vec<RawSender> {
    seeded
        .users
        .iter()
        .zip(&seeded.rooms[seeded.users.len()..])
        .enumerate()
        .map(|(i, (u, r))| RawSender {
            index: i as u64,
            round,
            claims_json: u.claims_json.clone(),
            room: r.id,
        })
        .collect()
}
