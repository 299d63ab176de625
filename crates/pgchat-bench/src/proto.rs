//! What the coordinator and its worker processes say to each other: one JSON object
//! per line on the worker's stdin (commands) and stdout (replies), strictly one reply
//! per command, in order.

use serde::{Deserialize, Serialize};

use crate::clients::Server;

/// A worker's share of the fleet and how to open it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub servers: Vec<Server>,
    pub sources: u8,
    pub acks: bool,
    pub timeout_s: f64,
    pub pad: usize,
    pub run: String,
    pub reconnect: bool,
    pub connect_concurrency: usize,
    pub specs: Vec<JobSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec {
    /// The socket's index in the whole fleet: its sender number and home server.
    pub index: u64,
    pub token: String,
    pub rooms: Vec<i64>,
}

/// The load one worker generates from its own sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Load {
    /// Messages per second over this worker's rooms.
    pub rate: f64,
    pub duration_s: f64,
    /// Every socket starts typing once per this many seconds (0: no typing).
    pub typing_period_s: f64,
    /// `rooms` and `history` requests per second, alternating.
    pub api_rate: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open the share (the first line); replies `Ready`.
    Job(Job),
    /// Sockets joined to each room over all workers, which every message is owed to.
    Members {
        rooms: Vec<(i64, u64)>,
    },
    /// Generate the load; replies `Loaded` when the schedule is through.
    Load(Load),
    Status,
    /// Close every socket; replies `Done`.
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ready(Ready),
    Ok,
    Loaded { scheduled: u64 },
    Status(Status),
    Done(Box<Done>),
    Failed { error: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ready {
    pub connected: usize,
    pub failed: usize,
    pub errors: Vec<String>,
    pub elapsed_s: f64,
    /// Connected sockets per server (the index in `Job::servers`).
    pub per_server: Vec<u64>,
    /// Sockets joined to each room here.
    pub rooms: Vec<(i64, u64)>,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Status {
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub expected: u64,
    pub unique: u64,
}

/// A worker's totals; histograms in hdrhistogram's V2 serialisation, base64.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Done {
    pub status: Status,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub typing_received: u64,
    pub closed_by_server: u64,
    pub gave_up: u64,
    pub reconnects: u64,
    pub resent: u64,
    pub slow_by_sender_server: Vec<u64>,
    /// Unix nanoseconds of the last resume completed on this worker.
    pub last_recovered_at: Option<u64>,
    pub api_unanswered: u64,
    pub error_codes: Vec<(String, u64)>,
    pub close_codes: Vec<(u16, u64)>,
    pub connect_hist: String,
    pub latency_hist: String,
    pub catchup_hist: String,
    pub recovery_hist: String,
    pub rejoin_hist: String,
    pub resumed_live_hist: String,
    pub rooms_hist: String,
    pub history_hist: String,
}
