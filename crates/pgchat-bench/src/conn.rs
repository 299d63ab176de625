//! One WebSocket connection as a task: connect from a loopback source address,
//! authenticate, join, then read every frame (latency, order, duplicates) and send what
//! the scenario asks for, until the fleet is stopped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::clients::{Shared, Spec};
use crate::frames::{self, Incoming};
use crate::tracker::Tracker;
use crate::wire::{Frame, Wire};

type Ws = Wire;

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
}

#[derive(Default)]
pub struct ConnResult {
    /// Time from the first attempt to authenticated and joined.
    pub connect_time: Option<Duration>,
    pub tracker: Tracker,
    /// Latency of every delivery of this run's messages, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Error frames by code.
    pub error_codes: HashMap<String, u64>,
    /// Chat messages whose text this run did not write.
    pub foreign: u64,
    /// The close code, when the server closed the connection during the run.
    pub closed_with: Option<u16>,
}

pub async fn run(
    shared: Arc<Shared>,
    spec: Spec,
    rx: mpsc::UnboundedReceiver<Cmd>,
    permit: OwnedSemaphorePermit,
    ready: oneshot::Sender<Result<(), String>>,
) -> ConnResult {
    let started = Instant::now();
    let ws = match tokio::time::timeout(shared.opts.timeout, establish(&shared, &spec)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return ConnResult::default();
        }
        Err(_) => {
            let _ = ready.send(Err("timed out connecting, authenticating or joining".into()));
            return ConnResult::default();
        }
    };
    let mut conn = Conn {
        result: ConnResult {
            connect_time: Some(started.elapsed()),
            ..ConnResult::default()
        },
        shared,
        index: spec.index,
        next_n: 0,
        in_flight: HashMap::new(),
        auto: None,
    };
    for room in &spec.rooms {
        if let Some(m) = conn.shared.members.get(room) {
            m.fetch_add(1, Relaxed);
        }
    }
    drop(permit);
    let _ = ready.send(Ok(()));
    conn.serve(ws, rx).await;
    conn.result
}

async fn establish(shared: &Shared, spec: &Spec) -> anyhow::Result<Ws> {
    let opts = &shared.opts;
    let socket = TcpSocket::new_v4()?;
    if opts.server.ip().is_loopback() {
        let host = 1 + (spec.index % u64::from(opts.sources)) as u8;
        socket
            .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
            .with_context(|| format!("binding 127.0.0.{host}"))?;
    }
    let stream = socket.connect(opts.server).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let mut ws = Wire::connect(stream, &opts.url, spec.index)
        .await
        .context("WebSocket handshake")?;
    ws.send_text(&frames::auth(&spec.token)).await?;
    wait_for(&mut ws, |f| f.kind == "authenticated").await?;
    for &room in &spec.rooms {
        ws.send_text(&frames::join(room)).await?;
        if opts.wait_join {
            wait_for(&mut ws, |f| f.kind == "joined" && f.room_id == Some(room)).await?;
        }
    }
    Ok(ws)
}

/// Reads frames until one satisfies `want`; an `error` frame or a close fails.
async fn wait_for(ws: &mut Ws, want: impl Fn(&Incoming) -> bool) -> anyhow::Result<()> {
    while let Some(frame) = ws.next().await? {
        if let Frame::Ping(payload) = &frame {
            ws.send_pong(payload).await?;
        }
        if let Frame::Close(code) = frame {
            bail!("connection closed by the server with {code}");
        }
        if let Frame::Text(text) = frame {
            let Some(f) = Incoming::parse(&text) else {
                continue;
            };
            if want(&f) {
                return Ok(());
            }
            if f.kind == "error" {
                let detail = f.error_text().unwrap_or_default();
                bail!(
                    "server error {}: {detail}",
                    f.code.as_deref().unwrap_or("?")
                );
            }
        }
    }
    Err(anyhow!("connection closed by the server"))
}

struct Auto {
    room: i64,
    until: Instant,
}

struct Conn {
    result: ConnResult,
    shared: Arc<Shared>,
    index: u64,
    next_n: u64,
    /// Sent and neither acknowledged nor rejected: counter → room.
    in_flight: HashMap<u64, i64>,
    auto: Option<Auto>,
}

impl Conn {
    async fn serve(&mut self, mut ws: Ws, mut rx: mpsc::UnboundedReceiver<Cmd>) {
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
                self.shared.counters.closed_by_server.fetch_add(1, Relaxed);
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close()).await;
    }

    async fn command(&mut self, ws: &mut Ws, cmd: Cmd) -> anyhow::Result<()> {
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
        }
    }

    async fn send_message(&mut self, ws: &mut Ws, room: i64) -> anyhow::Result<()> {
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
        self.in_flight.insert(n, room);
        let counters = &self.shared.counters;
        counters.sent.fetch_add(1, Relaxed);
        let owed = self.shared.members_of(room);
        counters.expected.fetch_add(owed, Relaxed);
        ws.send_text(&frame).await
    }

    /// Sends one more message per confirmation while an `Auto` window is open.
    async fn send_auto(&mut self, ws: &mut Ws, confirmations: usize) -> anyhow::Result<()> {
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
    fn on_frame(&mut self, text: &str) -> usize {
        if frames::is_presence(text) {
            return 0;
        }
        let Some(f) = Incoming::parse(text) else {
            return 0;
        };
        let counters = &self.shared.counters;
        if let Some((room, seq, body)) = f.delivery() {
            let Some(p) = frames::parse_payload(&body) else {
                self.result.foreign += 1;
                return 0;
            };
            let latency_us = frames::unix_nanos().saturating_sub(p.sent_at) / 1000;
            self.result
                .latencies_us
                .push(latency_us.min(u64::from(u32::MAX)) as u32);
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
                match f.ref_number().and_then(|n| self.in_flight.remove(&n)) {
                    Some(room) => {
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
            _ => 0,
        }
    }
}
