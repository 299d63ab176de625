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
    for name in HISTOGRAMS {
        let _registered = metrics::histogram!(name);
    }
}
