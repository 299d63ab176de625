//! One WebSocket connection as a task: connect from a loopback source address,
//! authenticate, join, then read every frame (latency, order, duplicates) and send what
//! the scenario asks for, until the fleet is stopped. With `reconnect`, a connection the
//! server drops resumes on another server ([`crate::resume`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::clients::{Shared, Spec};
use crate::dial::{dial, wait_for};
use crate::frames::{self, Incoming};
use crate::tracker::Tracker;
use crate::wire::{Frame, Wire};

pub enum Cmd {
    /// Send one message to `room`.
    Send { room: i64 },
    /// Keep `window` messages in flight to `room` until `until`, sending the next one
    /// on every ack (or own delivery with `--no-acks`).
    Auto {
        room: i64,
        window: usize,
        until: Instant,
    },
    /// Send `typing {isTyping: true}` to `room`.
    Typing { room: i64 },
    /// Send an API request and time its reply.
    Api(Api),
}

/// The request/reply frames whose reply time `scale` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rooms,
    History { room: i64 },
}

#[derive(Default)]
pub struct ConnResult {
    /// Time from the first attempt to authenticated and joined.
    pub connect_time: Option<Duration>,
    pub tracker: Tracker,
    /// Latency of every live delivery of this run's messages, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Latency of deliveries sent before this socket resumed (replayed on `join since`).
    pub catchup_us: Vec<u32>,
    /// Error frames by code.
    pub error_codes: HashMap<String, u64>,
    /// Chat messages whose text this run did not write.
    pub foreign: u64,
    /// The close code, when the server closed the connection during the run.
    pub closed_with: Option<u16>,
    /// Times this socket lost its server and resumed on another.
    pub reconnects: u32,
    /// Per resume: from losing the connection to every room joined again, in µs.
    pub recovery_us: Vec<u32>,
    /// Per resume: from connected to the new server to every room joined again, in µs.
    pub rejoin_us: Vec<u32>,
    /// Latency of live deliveries after this socket resumed (a subset of
    /// `latencies_us`): what the resume costs live traffic.
    pub resumed_live_us: Vec<u32>,
    /// Unacknowledged messages sent again after a resume (they keep their first
    /// send's time).
    pub resent: u64,
    /// Live deliveries that took a second or more, by the sender's first server.
    pub slow_by_sender_server: Vec<u64>,
    /// Unix nanoseconds when the last resume completed.
    pub recovered_at: Option<u64>,
    /// Lost the connection and could not resume within the connect timeout.
    pub gave_up: bool,
    /// Reply times of `rooms` and `history` requests, in µs.
    pub rooms_us: Vec<u32>,
    pub history_us: Vec<u32>,
    /// API requests sent and never answered (lost with a connection).
    pub api_unanswered: u64,
}

pub async fn run(
    shared: Arc<Shared>,
    spec: Spec,
    rx: mpsc::UnboundedReceiver<Cmd>,
    permit: OwnedSemaphorePermit,
    ready: oneshot::Sender<Result<(), String>>,
) -> ConnResult {
    let started = Instant::now();
    let home = shared.opts.home(spec.index);
    let joined = tokio::time::timeout(shared.opts.timeout, establish(&shared, &spec, home)).await;
    let (ws, last_seq) = match joined {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return ConnResult::default();
        }
        Err(_) => {
            let _ = ready.send(Err("timed out connecting, authenticating or joining".into()));
            return ConnResult::default();
        }
    };
    for room in &spec.rooms {
        if let Some(m) = shared.members.get(room) {
            m.fetch_add(1, Relaxed);
        }
    }
    let mut conn = Conn {
        result: ConnResult {
            connect_time: Some(started.elapsed()),
            ..ConnResult::default()
        },
        shared,
        index: spec.index,
        token: spec.token,
        rooms: spec.rooms,
        server: home,
        joined_seq: last_seq,
        next_n: 0,
        in_flight: HashMap::new(),
        auto: None,
        next_q: 0,
        api_pending: HashMap::new(),
        resumed_at: 0,
    };
    drop(permit);
    let _ = ready.send(Ok(()));
    conn.serve(ws, rx).await;
    conn.result.api_unanswered += conn.api_pending.len() as u64;
    conn.result
}

/// Connects, authenticates and joins every room; returns each room's `lastSeq`.
async fn establish(
    shared: &Shared,
    spec: &Spec,
    server: usize,
) -> anyhow::Result<(Wire, HashMap<i64, i64>)> {
    let opts = &shared.opts;
    let mut ws = dial(opts, &opts.servers[server], spec.index, &spec.token).await?;
    let mut last_seq = HashMap::new();
    for &room in &spec.rooms {
        ws.send_text(&frames::join(room)).await?;
        if opts.wait_join {
            let seq = wait_for(&mut ws, |f| f.kind == "joined" && f.room_id == Some(room)).await?;
            last_seq.insert(room, seq.unwrap_or(0));
        }
    }
    Ok((ws, last_seq))
}

struct Auto {
    room: i64,
    until: Instant,
}

pub(crate) struct Conn {
    pub(crate) result: ConnResult,
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: u64,
    pub(crate) token: String,
    pub(crate) rooms: Vec<i64>,
    /// The server this socket is on now.
    pub(crate) server: usize,
    /// Each room's `lastSeq` from its latest `joined`: where a resume starts when no
    /// message arrived since.
    pub(crate) joined_seq: HashMap<i64, i64>,
    next_n: u64,
    /// Sent and neither acknowledged nor rejected: counter → (room, frame). A resume
    /// sends them again, with the same `clientId`, as a real client would.
    pub(crate) in_flight: HashMap<u64, (i64, String)>,
    auto: Option<Auto>,
    next_q: u64,
    /// API requests awaiting their reply: number → (kind, sent).
    pub(crate) api_pending: HashMap<u64, (Api, Instant)>,
    /// Unix nanoseconds of the last resume: deliveries sent before it are catch-up.
    pub(crate) resumed_at: u64,
}

impl Conn {
    async fn serve(&mut self, mut ws: Wire, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let stop = self.shared.stop.clone();
        // Made once: a fresh `cancelled()` per wake-up registered and dropped a waiter
        // every time (5 % of the bench's CPU in bigroom).
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        let mut commands_open = true;
        loop {
            let outcome = tokio::select! {
                biased;
                _ = &mut stopped => break,
                cmd = rx.recv(), if commands_open => match cmd {
                    Some(cmd) => self.command(&mut ws, cmd).await,
                    None => {
                        commands_open = false;
                        Ok(())
                    }
                },
                frame = ws.next() => match frame {
                    Ok(Some(Frame::Text(text))) => {
                        let next = self.on_frame(&text);
                        self.send_auto(&mut ws, next).await
                    }
                    Ok(Some(Frame::Ping(payload))) => ws.send_pong(&payload).await,
                    Ok(Some(Frame::Close(code))) => {
                        self.result.closed_with = Some(code);
                        Err(anyhow!("closed"))
                    }
                    Ok(Some(Frame::Binary | Frame::Pong)) => Ok(()),
                    Ok(None) => Err(anyhow!("closed")),
                    Err(e) => Err(e),
                },
            };
            if outcome.is_err() {
                if self.shared.opts.reconnect && !stop.is_cancelled() {
                    if let Some(resumed) = self.reconnect().await {
                        ws = resumed;
                        continue;
                    }
                }
                self.shared.counters.closed_by_server.fetch_add(1, Relaxed);
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close()).await;
    }

    async fn command(&mut self, ws: &mut Wire, cmd: Cmd) -> anyhow::Result<()> {
        match cmd {
            Cmd::Send { room } => self.send_message(ws, room).await,
            Cmd::Auto {
                room,
                window,
                until,
            } => {
                self.auto = Some(Auto { room, until });
                for _ in 0..window {
                    self.send_message(ws, room).await?;
                }
                Ok(())
            }
            Cmd::Typing { room } => ws.send_text(&frames::typing(room, true)).await,
            Cmd::Api(api) => {
                let q = self.next_q;
                self.next_q += 1;
                self.api_pending.insert(q, (api, Instant::now()));
                let frame = match api {
                    Api::Rooms => frames::rooms(q),
                    Api::History { room } => frames::history(room, q),
                };
                ws.send_text(&frame).await
            }
        }
    }

    async fn send_message(&mut self, ws: &mut Wire, room: i64) -> anyhow::Result<()> {
        let n = self.next_n;
        self.next_n += 1;
        let opts = &self.shared.opts;
        let frame = frames::message(
            &opts.run,
            room,
            self.index,
            n,
            frames::unix_nanos(),
            opts.pad,
        );
        let counters = &self.shared.counters;
        counters.sent.fetch_add(1, Relaxed);
        let owed = self.shared.members_of(room);
        counters.expected.fetch_add(owed, Relaxed);
        let sent = ws.send_text(&frame).await;
        self.in_flight.insert(n, (room, frame));
        sent
    }

    /// Sends one more message per confirmation while an `Auto` window is open.
    async fn send_auto(&mut self, ws: &mut Wire, confirmations: usize) -> anyhow::Result<()> {
        for _ in 0..confirmations {
            match &self.auto {
                Some(a) if Instant::now() < a.until => {
                    let room = a.room;
                    self.send_message(ws, room).await?;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Accounts one server frame; returns how many sends it confirmed (or rejected),
    /// which is how many an `Auto` window may send next.
    pub(crate) fn on_frame(&mut self, text: &str) -> usize {
        let counters = &self.shared.counters;
        if frames::is_presence(text) {
            return 0;
        }
        if frames::is_typing(text) {
            counters.typing_received.fetch_add(1, Relaxed);
            return 0;
        }
        let Some(f) = Incoming::parse(text) else {
            return 0;
        };
        if let Some((room, seq, body)) = f.delivery() {
            let Some(p) = frames::parse_payload(&body) else {
                self.result.foreign += 1;
                return 0;
            };
            let latency_us = frames::unix_nanos().saturating_sub(p.sent_at) / 1000;
            let latency_us = latency_us.min(u64::from(u32::MAX)) as u32;
            if p.sent_at < self.resumed_at {
                self.result.catchup_us.push(latency_us);
            } else {
                self.result.latencies_us.push(latency_us);
                if self.resumed_at > 0 {
                    self.result.resumed_live_us.push(latency_us);
                }
                if latency_us >= 1_000_000 {
                    let servers = self.shared.opts.servers.len().max(1);
                    let slow = &mut self.result.slow_by_sender_server;
                    slow.resize(servers, 0);
                    slow[p.sender as usize % servers] += 1;
                }
            }
            let seen = self.result.tracker.record(room, seq, p.sender, p.n);
            if seen != crate::tracker::Seen::Duplicate {
                counters.unique.add(self.index, 1);
            }
            let own = p.sender == self.index;
            if own && !self.shared.opts.acks && self.in_flight.remove(&p.n).is_some() {
                counters.confirmed.fetch_add(1, Relaxed);
                return 1;
            }
            return 0;
        }
        match f.kind.as_ref() {
            "ack" => {
                let Some(n) = f.ref_number() else { return 0 };
                if !self.in_flight.contains_key(&n) {
                    return 0;
                }
                counters.acked.fetch_add(1, Relaxed);
                if !self.shared.opts.acks {
                    // Paced by own deliveries: keep it in flight until then.
                    return 0;
                }
                self.in_flight.remove(&n);
                counters.confirmed.fetch_add(1, Relaxed);
                1
            }
            "error" => {
                let code = f.code.as_deref().unwrap_or("unknown").to_string();
                *self.result.error_codes.entry(code).or_default() += 1;
                if let Some(q) = f.query_number() {
                    self.api_pending.remove(&q);
                    return 0;
                }
                match f.ref_number().and_then(|n| self.in_flight.remove(&n)) {
                    Some((room, _)) => {
                        counters.rejected.fetch_add(1, Relaxed);
                        let owed = self.shared.members_of(room);
                        counters.expected.fetch_sub(owed, Relaxed);
                        1
                    }
                    None => 0,
                }
            }
            "typing" => {
                counters.typing_received.fetch_add(1, Relaxed);
                0
            }
            "rooms" | "history" => {
                if let Some((api, at)) = f.query_number().and_then(|q| self.api_pending.remove(&q))
                {
                    let us = at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    match api {
                        Api::Rooms => self.result.rooms_us.push(us),
                        Api::History { .. } => self.result.history_us.push(us),
                    }
                }
                0
            }
            _ => 0,
        }
    }
}
