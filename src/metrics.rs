//! Prometheus exposition through the `metrics` crate. The recorder is process-global,
//! so it is installed once and shared by every server in the process (tests start many).
//!
//! Every series the daemon writes is described and registered here at zero when the
//! recorder is installed, so `/metrics` lists all of them from the start (a dashboard
//! or an alert on a rate sees 0, not "no data"). A new series belongs in [`register`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::{close, ErrorCode};

/// Reasons in `pgchat_connections_refused_total{reason}`.
pub const REFUSAL_REASONS: [&str; 4] = [
    "max_connections",
    "unauthenticated_cap",
    "per_ip_cap",
    "evicted",
];

/// Codes in `pgchat_closes_total{code}`: every close code the daemon sends (1000 is the
/// normal closure a client may end with).
pub const CLOSE_CODES: [u16; 12] = [
    1000,
    close::GOING_AWAY,
    close::PROTOCOL_ERROR,
    close::INVALID_DATA,
    close::MESSAGE_TOO_BIG,
    close::INTERNAL,
    close::TRY_AGAIN_LATER,
    close::AUTH_TIMEOUT,
    close::TOKEN_EXPIRED,
    close::RATE_LIMITED,
    close::SLOW_CONSUMER,
    close::IDLE_TIMEOUT,
];

/// Codes in `pgchat_auth_failures_total{code}`.
pub const AUTH_FAILURE_CODES: [ErrorCode; 3] = [
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::Forbidden,
];

/// Seconds: from half a millisecond (a free connection) to the 5 s pool wait timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const HISTOGRAMS: [&str; 3] = [
    "pgchat_db_latency_seconds",
    "pgchat_db_pool_wait_seconds",
    "pgchat_db_user_wait_seconds",
];

/// Seconds from a message's write to its relay: milliseconds when all is well, up to
/// the length of an outage when messages are caught up after a LISTEN loss.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const LAG_HISTOGRAM: &str = "pgchat_listener_lag_seconds";

/// Gauges set at each scrape by [`crate::gauges::refresh`] (and the listener's backlog,
/// set as doorbells arrive).
const GAUGES: [(&str, &str); 9] = [
    (
        "pgchat_db_pool_size",
        "Pooled connections at most (DB_POOL_SIZE)",
    ),
    ("pgchat_db_pool_in_use", "Pooled connections lent out now"),
    (
        "pgchat_db_pool_waiting",
        "Calls waiting for a pooled connection now",
    ),
    (
        "pgchat_join_reads_waiting",
        "Joins waiting for their turn to read (at most half the pool reads for joins)",
    ),
    (
        "pgchat_outbound_queue_max_frames",
        "Frames queued in the fullest socket subscribed to a room here",
    ),
    (
        "pgchat_outbound_queue_capacity",
        "Frames a socket may queue before it is closed as too slow (OUTBOUND_QUEUE)",
    ),
    (
        "pgchat_presence_users",
        "Users present in at least one room through a socket on this daemon",
    ),
    (
        "pgchat_presence_room_users",
        "(room, user) pairs present through a socket on this daemon",
    ),
    (
        "pgchat_listener_backlog",
        "Doorbells that rang while the relay read the last burst (its backlog)",
    ),
];

pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for name in HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.into()), LATENCY_BUCKETS)
                    .expect("valid buckets");
            }
            builder = builder
                .set_buckets_for_metric(Matcher::Full(LAG_HISTOGRAM.into()), LAG_BUCKETS)
                .expect("valid buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding app); then our
            // handle renders only what this recorder saw, which is acceptable.
            let _ = metrics::set_global_recorder(recorder);
            register();
            handle
        })
        .clone()
}

/// Describes every series and registers it at zero (`increment(0)` leaves a value that
/// is already counted as it is).
fn register() {
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};

    describe_gauge!("pgchat_connections", "Open WebSocket connections");
    describe_gauge!(
        "pgchat_rooms",
        "Rooms with at least one subscribed socket here"
    );
    for name in ["pgchat_connections", "pgchat_rooms"] {
        gauge!(name).increment(0.0);
    }
    for (name, help) in GAUGES {
        describe_gauge!(name, help);
        gauge!(name).increment(0.0);
    }

    let counters = [
        (
            "pgchat_messages_in_total",
            "Chat messages received from clients",
        ),
        (
            "pgchat_messages_out_total",
            "Committed messages relayed to room subscribers",
        ),
        ("pgchat_deliveries_total", "Frames queued to sockets"),
        (
            "pgchat_slow_consumer_closes_total",
            "Connections closed (4003) because a durable frame found their queue full",
        ),
        (
            "pgchat_ephemeral_dropped_total",
            "Typing and presence frames dropped because a socket's queue was half full",
        ),
        ("pgchat_notifications_total", "NOTIFY payloads received"),
        (
            "pgchat_notifications_ignored_total",
            "NOTIFY payloads that were not doorbells (ignored)",
        ),
        (
            "pgchat_resyncs_total",
            "Rooms whose backlog was too large to replay after a LISTEN loss",
        ),
        (
            "pgchat_listener_probe_failures_total",
            "Probes of the LISTEN connection that failed or came late",
        ),
        (
            "pgchat_listener_reconnects_total",
            "Times the LISTEN connection was re-made",
        ),
        (
            "pgchat_preupgrade_timeouts_total",
            "Connections closed before finishing the HTTP upgrade in time",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
        counter!(name).increment(0);
    }

    describe_counter!(
        "pgchat_connections_refused_total",
        "Connections refused before the upgrade, by reason"
    );
    for reason in REFUSAL_REASONS {
        counter!("pgchat_connections_refused_total", "reason" => reason).increment(0);
    }
    describe_counter!(
        "pgchat_closes_total",
        "WebSocket connections closed by the server, by close code"
    );
    for code in CLOSE_CODES {
        counter!("pgchat_closes_total", "code" => code.to_string()).increment(0);
    }
    describe_counter!(
        "pgchat_auth_failures_total",
        "Refused `auth` frames and upgrade tokens, by error code"
    );
    for code in AUTH_FAILURE_CODES {
        counter!("pgchat_auth_failures_total", "code" => code.as_str()).increment(0);
    }
    describe_counter!(
        "pgchat_errors_total",
        "`error` frames sent to clients (refusals), by error code"
    );
    for code in ErrorCode::ALL {
        counter!("pgchat_errors_total", "code" => code.as_str()).increment(0);
    }

    describe_histogram!(
        "pgchat_db_latency_seconds",
        "Latency of as-user database transactions"
    );
    describe_histogram!(
        "pgchat_db_pool_wait_seconds",
        "Time waiting for a pool connection"
    );
    describe_histogram!(
        "pgchat_db_user_wait_seconds",
        "Time an as-user call waited for its user's share of the pool (DB_USER_CONCURRENCY)"
    );
    describe_histogram!(
        LAG_HISTOGRAM,
        "Seconds from a message's write (its created_at) to its relay to this daemon's sockets"
    );
    for name in HISTOGRAMS.into_iter().chain([LAG_HISTOGRAM]) {
        let _registered = metrics::histogram!(name);
    }
}

/// Records how long ago the relayed message `body` (its JSON, as `changes_after`
/// returns it) was written. The write's time is the database's clock and the relay's
/// this host's: keep them in sync (NTP), or the lag is off by their difference.
pub fn record_listener_lag(body: &str) {
    if let Some(lag) = written_ago(body, std::time::SystemTime::now()) {
        metrics::histogram!(LAG_HISTOGRAM).record(lag);
    }
}

/// Seconds between the body's `created_at` and `now` (0 when the clocks disagree the
/// other way). `created_at` is the message's last field but `client_id`, after the text:
/// searched from the end, a quote in the text (escaped as `\"`) cannot be taken for it.
fn written_ago(body: &str, now: std::time::SystemTime) -> Option<f64> {
    const KEY: &str = "\"created_at\" : \"";
    let start = body.rfind(KEY)? + KEY.len();
    let len = body[start..].find('"')?;
    let written = chrono::DateTime::parse_from_rfc3339(&body[start..start + len]).ok()?;
    let written = std::time::UNIX_EPOCH
        + std::time::Duration::from_micros(u64::try_from(written.timestamp_micros()).ok()?);
    Some(
        now.duration_since(written)
            .map_or(0.0, |ago| ago.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::written_ago;

    #[test]
    fn the_lag_is_read_from_created_at_not_from_the_text() {
        // 2026-12-04T11:33:03.25+00:00, as PostgreSQL writes timestamptz in JSON.
        let written = UNIX_EPOCH + Duration::from_millis(1_796_383_983_250);
        let body = r#"{"id" : 7, "message" : "\"created_at\" : \"2001-01-01T00:00:00+00:00\"", "created_at" : "2026-12-04T11:33:03.25+00:00", "client_id" : null}"#;
        let ago = written_ago(body, written + Duration::from_millis(1500)).unwrap();
        assert!((ago - 1.5).abs() < 1e-6, "{ago}");
        // Another offset is the same instant.
        let body = r#"{"created_at" : "2026-12-04T12:33:03.25+01:00"}"#;
        let ago = written_ago(body, written + Duration::from_millis(20)).unwrap();
        assert!((ago - 0.02).abs() < 1e-6, "{ago}");
        // A clock behind the database's reads 0, never a negative lag.
        assert_eq!(
            written_ago(body, written - Duration::from_secs(1)),
            Some(0.0)
        );
        assert_eq!(written_ago(r#"{"message" : "hi"}"#, written), None);
    }
}
