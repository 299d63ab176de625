//! A few of each daemon's own figures from its `/metrics` (Prometheus text), read after
//! the load: how many doorbells it heard, how far its relay lagged, how long calls
//! waited for its pool, what it dropped. Sums over label values; histograms as means.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counters and gauges reported as they are (summed over their labels).
const PLAIN: &[&str] = &[
    "pgchat_connections",
    "pgchat_notifications_total",
    "pgchat_messages_out_total",
    "pgchat_deliveries_total",
    "pgchat_ephemeral_dropped_total",
    "pgchat_slow_consumer_closes_total",
    "pgchat_errors_total",
    "pgchat_listener_reconnects_total",
];

/// Histograms reported as their mean, in milliseconds.
const MEANS: &[&str] = &[
    "pgchat_listener_lag_seconds",
    "pgchat_db_pool_wait_seconds",
    "pgchat_db_latency_seconds",
];

/// Reads `/metrics` from the daemon behind a `ws://host:port/...` URL.
pub async fn scrape(ws_url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let authority = ws_url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .context("a ws:// URL")?;
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("/metrics took over 10 s")??;
    Ok(parse(&text))
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        *sums.entry(name.to_string()).or_default() += value;
    }
    let mut out = BTreeMap::new();
    for name in PLAIN {
        if let Some(v) = sums.get(*name) {
            out.insert(name.to_string(), *v);
        }
    }
    for name in MEANS {
        let (sum, count) = (
            sums.get(&format!("{name}_sum")),
            sums.get(&format!("{name}_count")),
        );
        if let (Some(sum), Some(count)) = (sum, count) {
            if *count > 0.0 {
                let ms = (sum / count * 1e6).round() / 1e3;
                out.insert(format!("{name}_mean_ms"), ms);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labels_and_averages_histograms() {
        let text = "# HELP x\n\
            pgchat_errors_total{code=\"internal\"} 2\n\
            pgchat_errors_total{code=\"forbidden\"} 3\n\
            pgchat_notifications_total 10\n\
            pgchat_listener_lag_seconds_bucket{le=\"0.1\"} 4\n\
            pgchat_listener_lag_seconds_sum 0.2\n\
            pgchat_listener_lag_seconds_count 4\n";
        let m = parse(text);
        assert_eq!(m["pgchat_errors_total"], 5.0);
        assert_eq!(m["pgchat_notifications_total"], 10.0);
        assert_eq!(m["pgchat_listener_lag_seconds_mean_ms"], 50.0);
        assert!(!m.contains_key("pgchat_db_pool_wait_seconds_mean_ms"));
    }
}
