//! Worker mode (`pgchat-bench worker`, started by a coordinator): holds its share of
//! the fleet, since one process may hold at most 20,000 open files, and answers the
//! coordinator's commands on stdin with one JSON line each on stdout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc::UnboundedSender, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clients::{self, Counters, Fleet, Options, Shared, Spec};
use crate::conn::{Api, Cmd, ConnResult};
use crate::hist;
use crate::limits;
use crate::proto::{Command, Done, Job, Load, Ready, Reply, Status};
use crate::scenarios::fanout::pick_staggered;
use crate::tracker::Tracker;

pub async fn serve(open_files: u64) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let first = lines.next_line().await?.context("no job on stdin")?;
    let Command::Job(job) = serde_json::from_str(&first).context("parsing the job")? else {
        anyhow::bail!("the first command must be the job");
    };
    if let Err(e) = limits::check_connections(job.specs.len(), open_files) {
        reply(&mut out, &Reply::Failed { error: e }).await?;
        return Ok(());
    }
    let (shared, specs) = shared_state(job);
    let n_servers = shared.opts.servers.len();
    let homes: Vec<usize> = specs.iter().map(|s| shared.opts.home(s.index)).collect();
    let mut layout: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (h, spec) in specs.iter().enumerate() {
        for &room in &spec.rooms {
            layout.entry(room).or_default().push(h);
        }
    }
    let concurrency = shared.gate.available_permits();
    let mut fleet = clients::open_all(&shared, specs, concurrency).await;
    let mut per_server = vec![0u64; n_servers];
    for (h, home) in homes.iter().enumerate() {
        if fleet.ready.get(h).copied().unwrap_or(false) {
            per_server[*home] += 1;
        }
    }
    let ready = Ready {
        connected: fleet.connected,
        failed: fleet.failed,
        errors: fleet.errors.clone(),
        elapsed_s: fleet.elapsed.as_secs_f64(),
        per_server,
        rooms: shared
            .members
            .iter()
            .map(|(r, n)| (*r, n.load(Relaxed)))
            .collect(),
    };
    reply(&mut out, &Reply::Ready(ready)).await?;
    while let Some(line) = lines.next_line().await? {
        let command: Command = serde_json::from_str(&line).context("parsing a command")?;
        let answer = match command {
            Command::Job(_) => Reply::Failed {
                error: "a worker takes one job".into(),
            },
            Command::Members { rooms } => {
                for (room, n) in rooms {
                    if let Some(m) = shared.members.get(&room) {
                        m.store(n, Relaxed);
                    }
                }
                Reply::Ok
            }
            Command::Load(load) => {
                let scheduled = generate(&fleet, &layout, &load).await;
                Reply::Loaded { scheduled }
            }
            Command::Status => Reply::Status(status(&shared.counters)),
            Command::Stop => {
                let results = clients::close_all(&shared, &mut fleet).await;
                let done = totals(&shared, &results);
                reply(&mut out, &Reply::Done(Box::new(done))).await?;
                return Ok(());
            }
        };
        reply(&mut out, &answer).await?;
    }
    Ok(())
}

async fn reply(out: &mut tokio::io::Stdout, reply: &Reply) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

fn shared_state(job: Job) -> (Arc<Shared>, Vec<Spec>) {
    let members = job
        .specs
        .iter()
        .flat_map(|s| s.rooms.iter().map(|r| (*r, AtomicU64::new(0))))
        .collect::<HashMap<_, _>>();
    let shared = Arc::new(Shared {
        opts: Options {
            servers: job.servers,
            sources: job.sources,
            wait_join: true,
            acks: job.acks,
            timeout: Duration::from_secs_f64(job.timeout_s.max(0.1)),
            pad: job.pad,
            run: job.run,
            reconnect: job.reconnect,
        },
        counters: Default::default(),
        members,
        stop: CancellationToken::new(),
        gate: Arc::new(Semaphore::new(job.connect_concurrency.max(1))),
    });
    let specs = job
        .specs
        .into_iter()
        .map(|s| Spec {
            index: s.index,
            token: s.token,
            rooms: s.rooms,
        })
        .collect();
    (shared, specs)
}

/// Sends this worker's messages, typing starts and API requests on schedule.
async fn generate(fleet: &Fleet, layout: &BTreeMap<i64, Vec<usize>>, load: &Load) -> u64 {
    let rooms: Vec<(i64, &Vec<usize>)> = layout.iter().map(|(r, m)| (*r, m)).collect();
    if rooms.is_empty() {
        return 0;
    }
    let members = rooms.iter().map(|(_, m)| m.len()).max().unwrap_or(1);
    // Message i goes to local room i mod R from its member (i / R + room) mod M: every
    // member in turn, as in fanout, but the rooms' turns staggered, so the senders of any
    // moment are spread over the servers as a real room's would be.
    let target = |i: u64| -> (i64, &UnboundedSender<Cmd>) {
        let (r, m) = pick_staggered(i, rooms.len(), members);
        let (room, sockets) = rooms[r];
        (room, &fleet.handles[sockets[m % sockets.len()]].tx)
    };
    let sockets = fleet.handles.len() as f64;
    let typing_rate = if load.typing_period_s > 0.0 {
        sockets / load.typing_period_s
    } else {
        0.0
    };
    let rates = [load.rate.max(0.0), typing_rate, load.api_rate.max(0.0)];
    let totals = rates.map(|r| (r * load.duration_s).round() as u64);
    let mut done = [0u64; 3];
    let mut scheduled = 0;
    let start = Instant::now();
    while done.iter().zip(&totals).any(|(d, t)| d < t) {
        let elapsed = start.elapsed().as_secs_f64();
        for s in 0..3 {
            let due = ((elapsed * rates[s]) as u64 + 1).min(totals[s]);
            while done[s] < due {
                let i = done[s];
                done[s] += 1;
                match s {
                    0 => {
                        let (room, tx) = target(i);
                        if tx.send(Cmd::Send { room }).is_ok() {
                            scheduled += 1;
                        }
                    }
                    // Another walk than messages', so typing comes from other members.
                    1 => {
                        let (room, tx) = target(i.wrapping_mul(7919));
                        let _ = tx.send(Cmd::Typing { room });
                    }
                    _ => {
                        let (room, tx) = target(i.wrapping_mul(104_729));
                        let api = if i % 2 == 0 {
                            Api::Rooms
                        } else {
                            Api::History { room }
                        };
                        let _ = tx.send(Cmd::Api(api));
                    }
                }
            }
        }
        let next = (0..3)
            .filter(|&s| done[s] < totals[s])
            .map(|s| done[s] as f64 / rates[s])
            .fold(f64::INFINITY, f64::min);
        if next.is_finite() {
            tokio::time::sleep_until((start + Duration::from_secs_f64(next)).into()).await;
        }
    }
    scheduled
}

fn status(c: &Counters) -> Status {
    Status {
        sent: Counters::get(&c.sent),
        acked: Counters::get(&c.acked),
        rejected: Counters::get(&c.rejected),
        expected: c.expected(),
        unique: c.unique.sum(),
    }
}

fn totals(shared: &Shared, results: &[ConnResult]) -> Done {
    let mut tracker = Tracker::default();
    let (mut errors, mut closes) = (BTreeMap::new(), BTreeMap::new());
    let mut done = Done {
        status: status(&shared.counters),
        typing_received: Counters::get(&shared.counters.typing_received),
        closed_by_server: Counters::get(&shared.counters.closed_by_server),
        ..Done::default()
    };
    for r in results {
        tracker.merge_counts(&r.tracker);
        done.foreign += r.foreign;
        done.gave_up += u64::from(r.gave_up);
        done.reconnects += u64::from(r.reconnects);
        done.resent += r.resent;
        add_counts(&mut done.slow_by_sender_server, &r.slow_by_sender_server);
        done.api_unanswered += r.api_unanswered;
        done.last_recovered_at = done.last_recovered_at.max(r.recovered_at);
        for (code, n) in &r.error_codes {
            *errors.entry(code.clone()).or_insert(0) += n;
        }
        if let Some(code) = r.closed_with {
            *closes.entry(code).or_insert(0) += 1;
        }
    }
    done.delivered = tracker.delivered;
    done.duplicates = tracker.duplicates;
    done.out_of_order = tracker.out_of_order;
    done.error_codes = errors.into_iter().collect();
    done.close_codes = closes.into_iter().collect();
    let us = |d: Duration| (d.as_micros() as u64).min(u64::from(u32::MAX)) as u32;
    let connect: Vec<u32> = results
        .iter()
        .filter_map(|r| r.connect_time)
        .map(us)
        .collect();
    done.connect_hist = hist::encode(&hist::of_us(&connect));
    let all =
        |f: fn(&ConnResult) -> &Vec<u32>| hist::encode(&hist::of_us(results.iter().flat_map(f)));
    done.latency_hist = all(|r| &r.latencies_us);
    done.catchup_hist = all(|r| &r.catchup_us);
    done.recovery_hist = all(|r| &r.recovery_us);
    done.rejoin_hist = all(|r| &r.rejoin_us);
    done.resumed_live_hist = all(|r| &r.resumed_live_us);
    done.rooms_hist = all(|r| &r.rooms_us);
    done.history_hist = all(|r| &r.history_us);
    done
}

/// Adds `more` to `into` element by element, growing it as needed.
pub(crate) fn add_counts(into: &mut Vec<u64>, more: &[u64]) {
    if into.len() < more.len() {
        into.resize(more.len(), 0);
    }
    into.iter_mut().zip(more).for_each(|(a, b)| *a += b);
}
