//! What `scale` reports: the workers' counts and histograms merged, per-daemon memory,
//! the join storm's presence writes, database connections, the kill and its recovery,
//! and the checks.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::ScaleArgs;
use crate::hist;
use crate::proto::{Done, Ready};
use crate::report::{histogram, round1, Latency};

use super::scale_db::Connections;

/// Every worker's counts and histograms added up.
pub struct Merged {
    pub connected: usize,
    pub failed: usize,
    pub errors: Vec<String>,
    pub done: Done,
    pub reconnects: u64,
    pub last_recovered_at: Option<u64>,
    pub error_codes: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<u16, u64>,
    pub connect: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub catchup: Histogram<u64>,
    pub recovery: Histogram<u64>,
    pub rejoin: Histogram<u64>,
    pub resumed_live: Histogram<u64>,
    pub rooms: Histogram<u64>,
    pub history: Histogram<u64>,
}

impl Default for Merged {
    fn default() -> Self {
        Merged {
            connected: 0,
            failed: 0,
            errors: Vec::new(),
            done: Done::default(),
            reconnects: 0,
            last_recovered_at: None,
            error_codes: BTreeMap::new(),
            close_codes: BTreeMap::new(),
            connect: histogram(),
            latency: histogram(),
            catchup: histogram(),
            recovery: histogram(),
            rejoin: histogram(),
            resumed_live: histogram(),
            rooms: histogram(),
            history: histogram(),
        }
    }
}

impl Merged {
    pub fn ready(&mut self, r: &Ready) {
        self.connected += r.connected;
        self.failed += r.failed;
        for e in &r.errors {
            if self.errors.len() < 5 {
                self.errors.push(e.clone());
            }
        }
    }

    pub fn done(&mut self, d: &Done) -> anyhow::Result<()> {
        let t = &mut self.done;
        t.status.sent += d.status.sent;
        t.status.acked += d.status.acked;
        t.status.rejected += d.status.rejected;
        t.status.expected += d.status.expected;
        t.status.unique += d.status.unique;
        t.delivered += d.delivered;
        t.duplicates += d.duplicates;
        t.out_of_order += d.out_of_order;
        t.foreign += d.foreign;
        t.typing_received += d.typing_received;
        t.closed_by_server += d.closed_by_server;
        t.gave_up += d.gave_up;
        t.resent += d.resent;
        crate::worker::add_counts(&mut t.slow_by_sender_server, &d.slow_by_sender_server);
        t.api_unanswered += d.api_unanswered;
        self.reconnects += d.reconnects;
        self.last_recovered_at = self.last_recovered_at.max(d.last_recovered_at);
        for (code, n) in &d.error_codes {
            *self.error_codes.entry(code.clone()).or_default() += n;
        }
        for (code, n) in &d.close_codes {
            *self.close_codes.entry(*code).or_default() += n;
        }
        hist::add(&mut self.connect, &d.connect_hist)?;
        hist::add(&mut self.latency, &d.latency_hist)?;
        hist::add(&mut self.catchup, &d.catchup_hist)?;
        hist::add(&mut self.recovery, &d.recovery_hist)?;
        hist::add(&mut self.rejoin, &d.rejoin_hist)?;
        hist::add(&mut self.resumed_live, &d.resumed_live_hist)?;
        hist::add(&mut self.rooms, &d.rooms_hist)?;
        hist::add(&mut self.history, &d.history_hist)?;
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct DaemonFigures {
    pub url: String,
    pub pid: Option<u32>,
    /// Sockets that joined through it.
    pub sockets: u64,
    pub rss_before: Option<u64>,
    /// Once every socket joined and presence settled.
    pub rss_after: Option<u64>,
    /// After the load (a survivor of a kill holds its share of the dead one's sockets).
    pub rss_end: Option<u64>,
    /// From its `/metrics` after the load (none for a killed daemon).
    pub metrics: Option<BTreeMap<String, f64>>,
}

impl DaemonFigures {
    fn rss_per_conn(&self) -> Option<f64> {
        let (b, a) = (self.rss_before?, self.rss_after?);
        (self.sockets > 0).then(|| round1((a as f64 - b as f64) / self.sockets as f64))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PresenceStorm {
    /// Presence rows written by the join storm.
    pub rows: i64,
    /// From the first connect until the table held them all.
    pub seconds: Option<f64>,
    pub rows_per_s: Option<f64>,
    /// Seconds the presence table was still behind after the last socket joined.
    pub behind_joins_s: Option<f64>,
    /// `pgchat.presence_apply` transactions during the storm (needs `track_functions`).
    pub transactions: Option<i64>,
}

impl PresenceStorm {
    pub fn new(rows: i64, seconds: Option<f64>, connect_secs: f64) -> Self {
        PresenceStorm {
            rows,
            seconds: seconds.map(round3),
            rows_per_s: seconds
                .filter(|s| *s > 0.0)
                .map(|s| round1(rows as f64 / s)),
            behind_joins_s: seconds.map(|s| round3((s - connect_secs).max(0.0))),
            transactions: None,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct KillFigures {
    pub server: usize,
    pub pid: u32,
    pub url: String,
    pub at_s: f64,
    #[serde(skip)]
    pub killed_unix_ns: u64,
    pub daemon_id: Option<String>,
    /// Its presence rows at the kill.
    pub presence_rows: i64,
    /// Sockets it held.
    pub sockets: u64,
    /// Resumes on the other servers (over the whole run).
    pub reconnects: u64,
    pub gave_up: u64,
    /// Per resumed socket: from losing the connection to every room joined again.
    pub recovery_ms: Option<Latency>,
    /// Per resumed socket: from connected to the new server to every room joined again.
    pub rejoin_ms: Option<Latency>,
    /// Live deliveries at resumed sockets after their resume (part of the run's
    /// delivery latency).
    pub resumed_live_ms: Option<Latency>,
    /// Unacknowledged messages its sockets sent again after resuming.
    pub resent: u64,
    /// Live deliveries of a second or more, by the first server of their sender.
    pub slow_by_sender_server: Vec<u64>,
    /// From the kill until the last socket resumed.
    pub all_resumed_after_s: Option<f64>,
    /// From the kill until its presence rows and heartbeat row were swept.
    pub presence_swept_after_s: Option<f64>,
    pub sweep_bound_s: f64,
}

impl KillFigures {
    pub fn finish(&mut self, m: &Merged) {
        self.reconnects = m.reconnects;
        self.gave_up = m.done.gave_up;
        self.resent = m.done.resent;
        self.slow_by_sender_server = m.done.slow_by_sender_server.clone();
        self.recovery_ms = Latency::from_us(&m.recovery);
        self.rejoin_ms = Latency::from_us(&m.rejoin);
        self.resumed_live_ms = Latency::from_us(&m.resumed_live);
        self.all_resumed_after_s = m
            .last_recovered_at
            .filter(|t| *t >= self.killed_unix_ns)
            .map(|t| round3((t - self.killed_unix_ns) as f64 / 1e9));
    }
}

#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub scenario: &'static str,
    pub parameters: serde_json::Value,
    pub run: String,
    pub connections: usize,
    pub connected: usize,
    pub connect_failures: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_errors: Vec<String>,
    pub connects_per_s: f64,
    pub connect_ms: Option<Latency>,
    pub daemons: Vec<serde_json::Value>,
    pub presence_storm: PresenceStorm,
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub msgs_per_s: f64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub typing_received: u64,
    /// Live deliveries (not replayed on a resume).
    pub latency_ms: Option<Latency>,
    /// Deliveries replayed to resumed sockets (sent before they resumed).
    pub catchup_ms: Option<Latency>,
    pub rooms_ms: Option<Latency>,
    pub history_ms: Option<Latency>,
    pub api_unanswered: u64,
    pub pg_connections: Connections,
    pub kill: Option<KillFigures>,
    pub closed_by_server: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<u16, u64>,
    /// The 1/5/15-minute load averages at the start and at the end.
    pub load_average: [Option<[f64; 3]>; 2],
    pub checks: BTreeMap<&'static str, bool>,
    pub passed: bool,
    pub duration_s: f64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl ScaleReport {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        run: String,
        parameters: serde_json::Value,
        a: &ScaleArgs,
        m: Merged,
        connect_secs: f64,
        send_secs: f64,
        daemons: Vec<DaemonFigures>,
        presence_storm: PresenceStorm,
        pg_connections: Connections,
        kill: Option<KillFigures>,
        load_average: [Option<[f64; 3]>; 2],
        duration_s: f64,
    ) -> ScaleReport {
        let d = &m.done;
        let lost = d.status.expected.saturating_sub(d.status.unique);
        let latency = Latency::from_us(&m.latency);
        let (rooms, history) = (Latency::from_us(&m.rooms), Latency::from_us(&m.history));
        let mut checks = BTreeMap::new();
        checks.insert("all_connected", m.connected == a.connections);
        checks.insert(
            "nothing_lost_duplicated_or_reordered",
            d.status.sent > 0 && lost == 0 && d.duplicates == 0 && d.out_of_order == 0,
        );
        checks.insert(
            "delivery_mean_within_200ms",
            latency.is_some_and(|l| l.mean <= 200.0),
        );
        let api_ok = |l: Option<Latency>| l.is_some_and(|l| l.p95 <= 500.0);
        checks.insert(
            "rooms_and_history_p95_within_500ms",
            api_ok(rooms) && api_ok(history),
        );
        if let Some(k) = &kill {
            checks.insert(
                "killed_sockets_all_resumed",
                k.gave_up == 0 && k.reconnects >= k.sockets,
            );
            checks.insert(
                "presence_swept_within_bound",
                k.presence_swept_after_s
                    .is_some_and(|s| s <= k.sweep_bound_s),
            );
        }
        let passed = checks.values().all(|ok| *ok);
        let daemons = daemons
            .iter()
            .map(|f| {
                let mut v = serde_json::to_value(f).expect("serialisable");
                v["rss_bytes_per_conn"] = serde_json::json!(f.rss_per_conn());
                v
            })
            .collect();
        ScaleReport {
            scenario: "scale",
            parameters,
            run,
            connections: a.connections,
            connected: m.connected,
            connect_failures: m.failed,
            connect_errors: m.errors.clone(),
            connects_per_s: round1(m.connected as f64 / connect_secs.max(1e-9)),
            connect_ms: Latency::from_us(&m.connect),
            daemons,
            presence_storm,
            sent: d.status.sent,
            acked: d.status.acked,
            rejected: d.status.rejected,
            msgs_per_s: round1(d.status.sent as f64 / send_secs.max(1e-9)),
            expected: d.status.expected,
            delivered: d.delivered,
            lost,
            duplicates: d.duplicates,
            out_of_order: d.out_of_order,
            foreign: d.foreign,
            typing_received: d.typing_received,
            latency_ms: latency,
            catchup_ms: Latency::from_us(&m.catchup),
            rooms_ms: rooms,
            history_ms: history,
            api_unanswered: d.api_unanswered,
            pg_connections,
            kill,
            closed_by_server: d.closed_by_server,
            error_codes: m.error_codes.clone(),
            close_codes: m.close_codes.clone(),
            load_average,
            checks,
            passed,
            duration_s: round1(duration_s),
        }
    }

    /// The JSON object (`--json`), or the same fields pretty-printed.
    pub fn print(&self, json: bool) {
        let text = if json {
            serde_json::to_string(self)
        } else {
            serde_json::to_string_pretty(self)
        };
        println!("{}", text.expect("report serialises"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_storm_rates() {
        let p = PresenceStorm::new(50_000, Some(25.0), 20.0);
        assert_eq!(p.rows_per_s, Some(2000.0));
        assert_eq!(p.behind_joins_s, Some(5.0));
        assert_eq!(PresenceStorm::new(10, None, 1.0).rows_per_s, None);
    }

    #[test]
    fn rss_per_connection_is_per_daemon() {
        let f = DaemonFigures {
            url: "ws://x".into(),
            pid: Some(1),
            sockets: 1000,
            rss_before: Some(10_000_000),
            rss_after: Some(13_000_000),
            rss_end: None,
            metrics: None,
        };
        assert_eq!(f.rss_per_conn(), Some(3000.0));
    }
}
