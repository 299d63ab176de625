//! The result of a run: one JSON object (`--json`) or a readable summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clients::{Counters, Fleet, Shared};
use crate::conn::ConnResult;
use crate::tracker::Tracker;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds, in milliseconds; `None` when empty.
    pub fn from_us(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: (h.mean()).round() / 1000.0,
        })
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub parameters: serde_json::Value,
    pub run: String,
    pub connections: usize,
    pub connected: usize,
    pub connect_failures: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_errors: Vec<String>,
    pub connects_per_s: Option<f64>,
    pub connect_ms: Option<Latency>,
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub typing_received: u64,
    pub closed_by_server: u64,
    pub error_codes: BTreeMap<String, u64>,
    /// Close codes of connections the server closed during the run.
    pub close_codes: BTreeMap<u16, u64>,
    pub latency_ms: Option<Latency>,
    pub msgs_per_s: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub server_rss_bytes_before: Option<u64>,
    pub server_rss_bytes_after: Option<u64>,
    pub server_rss_bytes_per_conn: Option<f64>,
    /// CPU seconds the server (with --server-pid) and the bench used in the measured
    /// phase (connecting for `connect`, sending and draining for the others).
    pub server_cpu_s: Option<f64>,
    pub bench_cpu_s: Option<f64>,
    pub limit_msgs_per_s: Option<f64>,
    pub limit_ratio: Option<f64>,
    pub duration_s: f64,
}

/// 1 decimal for rates and bytes.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Report {
    /// Fills connection, delivery and latency fields from a finished fleet.
    pub fn collect(
        scenario: &'static str,
        parameters: serde_json::Value,
        shared: &Shared,
        fleet: &Fleet,
        results: &[ConnResult],
    ) -> Report {
        let mut tracker = Tracker::default();
        let mut latency = histogram();
        let mut connect = histogram();
        let mut error_codes = BTreeMap::new();
        let mut close_codes = BTreeMap::new();
        let mut foreign = 0;
        for r in results {
            tracker.merge_counts(&r.tracker);
            for &us in &r.latencies_us {
                latency.saturating_record(u64::from(us).max(1));
            }
            if let Some(t) = r.connect_time {
                connect.saturating_record((t.as_micros() as u64).max(1));
            }
            for (code, n) in &r.error_codes {
                *error_codes.entry(code.clone()).or_default() += n;
            }
            foreign += r.foreign;
            if let Some(code) = r.closed_with {
                *close_codes.entry(code).or_default() += 1;
            }
        }
        let c = &shared.counters;
        let expected = c.expected();
        let secs = fleet.elapsed.as_secs_f64();
        Report {
            scenario,
            parameters,
            run: shared.opts.run.clone(),
            connections: fleet.connected + fleet.failed,
            connected: fleet.connected,
            connect_failures: fleet.failed,
            connect_errors: fleet.errors.clone(),
            connects_per_s: (secs > 0.0).then(|| round1(fleet.connected as f64 / secs)),
            connect_ms: Latency::from_us(&connect),
            sent: Counters::get(&c.sent),
            acked: Counters::get(&c.acked),
            rejected: Counters::get(&c.rejected),
            delivered: tracker.delivered,
            expected,
            lost: expected.saturating_sub(tracker.unique),
            duplicates: tracker.duplicates,
            out_of_order: tracker.out_of_order,
            foreign,
            typing_received: Counters::get(&c.typing_received),
            closed_by_server: Counters::get(&c.closed_by_server),
            error_codes,
            close_codes,
            latency_ms: Latency::from_us(&latency),
            ..Report::default()
        }
    }

    pub fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).expect("report serialises")
            );
        } else {
            print!("{}", self.summary());
        }
    }

    pub fn summary(&self) -> String {
        let mut out = format!("pgchat-bench {} (run {})\n", self.scenario, self.run);
        out += &format!("  parameters      {}\n", self.parameters);
        out += &format!(
            "  connections     {} of {} ready, {} failed",
            self.connected, self.connections, self.connect_failures
        );
        if let Some(r) = self.connects_per_s {
            out += &format!(", {r} connects+auths+joins/s");
        }
        out += "\n";
        for e in &self.connect_errors {
            out += &format!("    error: {e}\n");
        }
        if let Some(l) = self.connect_ms {
            out += &format!("  connect ms      {}\n", latency_line(&l));
        }
        if self.sent > 0 || self.scenario != "connect" {
            out += &format!(
                "  messages        sent {}, acked {}, rejected {}\n",
                self.sent, self.acked, self.rejected
            );
            out += &format!(
                "  deliveries      {} of {} expected: lost {}, duplicates {}, out of order {}\n",
                self.delivered, self.expected, self.lost, self.duplicates, self.out_of_order
            );
        }
        if let Some(l) = self.latency_ms {
            out += &format!("  latency ms      {}\n", latency_line(&l));
        }
        if let Some(r) = self.msgs_per_s {
            out += &format!("  msgs/s          {r}\n");
        }
        if let Some(r) = self.deliveries_per_s {
            out += &format!("  deliveries/s    {r}\n");
        }
        if let Some(r) = self.limit_msgs_per_s {
            out += &format!("  limit msgs/s    {r} (raw transaction over tokio-postgres)\n");
        }
        if let Some(r) = self.limit_ratio {
            out += &format!("  of the limit    {:.1}%\n", r * 100.0);
        }
        if let Some(b) = self.server_rss_bytes_per_conn {
            out += &format!(
                "  server RSS      {} -> {} bytes, {b} bytes/connection\n",
                self.server_rss_bytes_before.unwrap_or(0),
                self.server_rss_bytes_after.unwrap_or(0)
            );
        }
        if self.server_cpu_s.is_some() || self.bench_cpu_s.is_some() {
            let show = |x: Option<f64>| x.map_or("-".to_string(), |s| format!("{s} s"));
            out += &format!(
                "  CPU             server {}, bench {}\n",
                show(self.server_cpu_s),
                show(self.bench_cpu_s)
            );
        }
        if !self.error_codes.is_empty() {
            out += &format!("  error frames    {:?}\n", self.error_codes);
        }
        if self.closed_by_server > 0 || self.foreign > 0 {
            out += &format!(
                "  anomalies       {} closed by the server (codes {:?}), {} foreign messages\n",
                self.closed_by_server, self.close_codes, self.foreign
            );
        }
        out += &format!("  duration        {} s\n", self.duration_s);
        out
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {} p90 {} p99 {} max {} (mean {})",
        l.p50, l.p90, l.p99, l.max, l.mean
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 100).unwrap(); // 0.1 ms .. 100 ms
        }
        let l = Latency::from_us(&h).unwrap();
        assert!((l.p50 - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p90 - 90.0).abs() < 0.1, "{l:?}");
        assert!((l.p99 - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max - 100.0).abs() < 0.1, "{l:?}");
        assert!(Latency::from_us(&histogram()).is_none());
    }

    #[test]
    fn json_has_the_issue_fields() {
        let r = Report {
            scenario: "fanout",
            parameters: serde_json::json!({"rooms": 1}),
            ..Report::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "scenario",
            "parameters",
            "sent",
            "delivered",
            "expected",
            "lost",
            "duplicates",
            "out_of_order",
            "latency_ms",
            "msgs_per_s",
            "server_rss_bytes_per_conn",
            "limit_msgs_per_s",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(r.summary().contains("fanout"));
    }

    #[test]
    fn rounding() {
        assert_eq!(round1(2.349), 2.3);
        assert_eq!(round1(1234.56), 1234.6);
    }
}
