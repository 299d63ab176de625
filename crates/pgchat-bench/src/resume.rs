//! Resuming a lost connection on another server, as a client behind a load balancer
//! would: connect to one of the other servers, authenticate, `join` every room with
//! `since` (the last `seq` seen), take the replay, and send again every message that was
//! never acknowledged, with the same `clientId` (the server never stores it twice).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::conn::Conn;
use crate::dial::dial;
use crate::frames::{self, Incoming};
use crate::wire::{Frame, Wire};

impl Conn {
    /// Tries the other servers in turn until one takes the socket back, within the
    /// connect timeout; `None` when none did (or the run stopped).
    pub(crate) async fn reconnect(&mut self) -> Option<Wire> {
        let lost = Instant::now();
        let n = self.shared.opts.servers.len();
        let deadline = lost + self.shared.opts.timeout;
        // The lost server's sockets spread evenly over the others: all going to the
        // next one would double its load (and its open files).
        let first = 1 + (self.index as usize / n) % (n - 1).max(1);
        let mut attempt = 0;
        // Requests in flight on the lost connection get no reply.
        self.result.api_unanswered += self.api_pending.len() as u64;
        self.api_pending.clear();
        while Instant::now() < deadline && !self.shared.stop.is_cancelled() {
            let server = (self.server + first + attempt) % n;
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            // At most --connect-concurrency resumes in flight, like the first connects:
            // thousands of sockets lose their server at the same instant.
            let Ok(permit) = self.shared.gate.clone().acquire_owned().await else {
                return None;
            };
            let resumed = tokio::time::timeout(left, self.resume_on(server)).await;
            drop(permit);
            match resumed {
                Ok(Ok(ws)) => {
                    self.server = server;
                    self.result.reconnects += 1;
                    let us = lost.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    self.result.recovery_us.push(us);
                    self.result.recovered_at = Some(frames::unix_nanos());
                    return Some(ws);
                }
                // Refused or dropped: the next server is tried; a socket that gives up
                // is counted in the report.
                Ok(Err(_)) => {
                    if attempt % n == 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(_) => break,
            }
        }
        self.result.gave_up = true;
        None
    }

    /// Connects to `server`, rejoins every room from where this socket left off and
    /// sends unacknowledged messages again.
    async fn resume_on(&mut self, server: usize) -> anyhow::Result<Wire> {
        let opts = &self.shared.opts;
        let mut ws = dial(opts, &opts.servers[server], self.index, &self.token).await?;
        self.resumed_at = frames::unix_nanos();
        let dialed = Instant::now();
        for &room in &self.rooms {
            let seen = self.result.tracker.last_seq(room).map_or(0, |s| s as i64);
            let since = seen.max(self.joined_seq.get(&room).copied().unwrap_or(0));
            ws.send_text(&frames::join_since(room, since)).await?;
        }
        // The replay comes before each `joined`: account it as it arrives.
        let mut waiting: HashSet<i64> = self.rooms.iter().copied().collect();
        while !waiting.is_empty() {
            let frame = ws
                .next()
                .await?
                .ok_or_else(|| anyhow!("closed while resuming"))?;
            match frame {
                Frame::Text(text) => {
                    if let Some(f) = Incoming::parse(&text) {
                        if f.kind == "joined" {
                            if let Some(room) = f.room_id {
                                waiting.remove(&room);
                                self.joined_seq.insert(room, f.last_seq.unwrap_or(0));
                            }
                            continue;
                        }
                        if f.kind == "error"
                            && f.query_number().is_none()
                            && f.ref_number().is_none()
                        {
                            bail!(
                                "server error {} while resuming",
                                f.code.as_deref().unwrap_or("?")
                            );
                        }
                    }
                    self.on_frame(&text);
                }
                Frame::Ping(payload) => ws.send_pong(&payload).await?,
                Frame::Close(code) => bail!("closed with {code} while resuming"),
                Frame::Binary | Frame::Pong => {}
            }
        }
        let us = dialed.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        self.result.rejoin_us.push(us);
        let mut unacked: Vec<(u64, String)> = self
            .in_flight
            .iter()
            .map(|(n, (_, frame))| (*n, frame.clone()))
            .collect();
        unacked.sort_unstable_by_key(|(n, _)| *n);
        self.result.resent += unacked.len() as u64;
        for (_, frame) in unacked {
            ws.send_text(&frame).await?;
        }
        Ok(ws)
    }
}
