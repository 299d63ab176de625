//! Prometheus exposition through the `metrics` crate. The recorder is process-global,
//! so it is installed once and shared by every server in the process (tests start many).
//!
//! Names: `pgchat_connections`, `pgchat_rooms` (gauges); `pgchat_messages_in_total`,
//! `pgchat_messages_out_total`, `pgchat_deliveries_total`, `pgchat_slow_consumer_kicks_total`,
//! `pgchat_notifications_total`, `pgchat_listener_reconnects_total` (counters);
//! `pgchat_db_latency_seconds` (histogram).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("pgchat_db_latency_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .expect("valid buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding app); then our
            // handle renders only what this recorder saw, which is acceptable.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!("pgchat_connections", "Open WebSocket connections");
    metrics::describe_gauge!(
        "pgchat_rooms",
        "Rooms with at least one subscribed socket here"
    );
    metrics::describe_counter!(
        "pgchat_messages_in_total",
        "Chat messages received from clients"
    );
    metrics::describe_counter!(
        "pgchat_messages_out_total",
        "Committed messages relayed to room subscribers"
    );
    metrics::describe_counter!(
        "pgchat_deliveries_total",
        "Frames queued to sockets by the hub"
    );
    metrics::describe_counter!(
        "pgchat_slow_consumer_kicks_total",
        "Connections closed because their queue overflowed"
    );
    metrics::describe_counter!("pgchat_notifications_total", "NOTIFY payloads received");
    metrics::describe_counter!(
        "pgchat_listener_reconnects_total",
        "Times the LISTEN connection was re-made"
    );
    metrics::describe_histogram!(
        "pgchat_db_latency_seconds",
        "Latency of as-user database transactions"
    );
}
