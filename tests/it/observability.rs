//! What an operator sees: every metric `docs/operations.md` lists is served from the
//! start, every metric the Grafana dashboard names exists, the logs say who was refused
//! and why, and even at `RUST_LOG=trace` they carry no password, message text or token.
//! The daemon runs as a child process each time, so nothing another test did counts.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::child::ChildServer;
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// One sample line of `/metrics`: name, labels (`{…}` or empty) and value.
struct Sample {
    name: String,
    labels: String,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            Sample {
                name: name.to_string(),
                labels: labels.to_string(),
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// `# TYPE name kind` lines: metric family → kind.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count` included).
fn family<'a>(name: &'a str, kinds: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if kinds.get(base).map(String::as_str) == Some("histogram") {
                return base;
            }
        }
    }
    name
}

/// A row of the metrics table in docs/operations.md.
struct Documented {
    name: String,
    kind: String,
    /// (label, its values)
    labels: Option<(String, Vec<String>)>,
    at_start: String,
}

/// The words in backticks, in order.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn documented_metrics() -> Vec<Documented> {
    let doc = repo_file("docs/operations.md");
    let rows: Vec<Documented> = doc
        .lines()
        .filter(|l| l.starts_with("| `pgchat_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // ["", metric, type, labels, at start, meaning, ""]
            let labels = backticked(cells[3]);
            Documented {
                name: backticked(cells[1]).remove(0),
                kind: cells[2].to_string(),
                labels: (!labels.is_empty()).then(|| (labels[0].clone(), labels[1..].to_vec())),
                at_start: cells[4].to_string(),
            }
        })
        .collect();
    assert!(rows.len() >= 25, "the metrics table was found");
    rows
}

#[tokio::test]
async fn every_metric_in_the_operations_guide_is_served_from_the_start() {
    let db = common::TestDb::new().await;
    // ChildServer runs with DB_POOL_SIZE=4; OUTBOUND_QUEUE keeps its default.
    let server = ChildServer::start(&db, &[]).await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let all = samples(&body);
    let kinds = types(&body);
    let documented = documented_metrics();

    for metric in &documented {
        assert_eq!(
            kinds.get(&metric.name),
            Some(&metric.kind),
            "{} is served as a {}",
            metric.name,
            metric.kind
        );
        let series: Vec<&Sample> = all
            .iter()
            .filter(|s| family(&s.name, &kinds) == metric.name)
            .collect();
        assert!(!series.is_empty(), "{} missing from:\n{body}", metric.name);
        if let Some((label, values)) = &metric.labels {
            assert!(!values.is_empty(), "{}: label values listed", metric.name);
            for value in values {
                let wanted = format!("{label}=\"{value}\"");
                assert!(
                    series.iter().any(|s| s.labels.contains(&wanted)),
                    "{}{{{wanted}}} missing",
                    metric.name
                );
            }
            let served = series
                .iter()
                .filter(|s| s.labels.contains(&format!("{label}=\"")))
                .count();
            assert_eq!(
                served,
                values.len(),
                "{}: every label value is listed",
                metric.name
            );
        }
        let values: Vec<f64> = series.iter().map(|s| s.value).collect();
        match metric.at_start.as_str() {
            "0" => assert!(
                values.iter().all(|v| *v == 0.0),
                "{} is 0 at start: {values:?}",
                metric.name
            ),
            "`DB_POOL_SIZE`" => assert_eq!(values, [4.0], "{}", metric.name),
            "`OUTBOUND_QUEUE`" => assert_eq!(values, [1024.0], "{}", metric.name),
            "counted" => {
                let count = series
                    .iter()
                    .find(|s| s.name.ends_with("_count"))
                    .expect("a histogram count");
                assert!(count.value >= 1.0, "{}: {}", metric.name, count.value);
            }
            other => panic!("{}: unknown value at start `{other}`", metric.name),
        }
    }

    // And the guide lists every pgchat series the daemon serves.
    let listed: BTreeSet<&str> = documented.iter().map(|m| m.name.as_str()).collect();
    for sample in &all {
        let name = family(&sample.name, &kinds);
        if name.starts_with("pgchat_") {
            assert!(listed.contains(name), "{name} is not in docs/operations.md");
        }
    }
}

/// Every `expr` in the dashboard, wherever it sits.
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => expressions(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| expressions(i, out)),
        _ => {}
    }
}

/// The `pgchat_…` names an expression uses.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pgchat_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// The labels of every `by (…)` in an expression.
fn grouping_labels(expr: &str) -> Vec<&str> {
    expr.match_indices("by (")
        .flat_map(|(i, m)| {
            let inner = &expr[i + m.len()..];
            inner[..inner.find(')').unwrap()].split(',').map(str::trim)
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_names_exists() {
    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana-dashboard.json")).expect("valid JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard's queries were found");

    let db = common::TestDb::new().await;
    let server = ChildServer::start(&db, &[]).await;
    let (_, body) = server.get("/metrics").await;
    let all = samples(&body);
    let kinds = types(&body);
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "a pgchat metric in `{expr}`");
        for name in &names {
            assert!(
                all.iter().any(|s| s.name == *name),
                "the dashboard's `{name}` is not served (in `{expr}`)"
            );
            used.insert(family(name, &kinds).to_string());
        }
        // Grouped by a label the series carries (instance and job come from Prometheus).
        for label in grouping_labels(expr) {
            if ["instance", "job", "le"].contains(&label) {
                continue;
            }
            assert!(
                all.iter().any(|s| names.contains(&s.name.as_str())
                    && s.labels.contains(&format!("{label}=\""))),
                "`{label}` is not a label of {names:?}"
            );
        }
    }
    // Nothing the guide lists is left off the dashboard.
    for metric in documented_metrics() {
        assert!(
            used.contains(&metric.name),
            "{} is not on the dashboard",
            metric.name
        );
    }
}

/// The value of the one series called exactly `series` (labels included) in `body`.
fn value_of(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from:\n{body}"))
}

/// The scrape-time gauges follow a socket into a room, and a message written through
/// PostgREST's path is measured from its write to its relay.
#[tokio::test]
async fn presence_gauges_and_listener_lag_follow_the_traffic() {
    let db = common::TestDb::new().await;
    let server = ChildServer::start(&db, &[]).await;
    let (alice, token) = db.signup("ops-gauges@example.com", "Alice").await;
    let mut c = common::server::Client::connect(&server.url()).await;
    let me = c
        .request(serde_json::json!({"type": "auth", "token": token}))
        .await;
    assert_eq!(me["user"]["id"], alice, "{me}");
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "Gauges").await;
    let joined = c
        .request(serde_json::json!({"type": "join", "roomId": room}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");

    let (_, body) = server.get("/metrics").await;
    assert_eq!(value_of(&body, "pgchat_presence_users"), 1.0);
    assert_eq!(value_of(&body, "pgchat_presence_room_users"), 1.0);
    assert_eq!(value_of(&body, "pgchat_rooms"), 1.0);
    assert_eq!(value_of(&body, "pgchat_connections"), 1.0);
    assert_eq!(value_of(&body, "pgchat_listener_lag_seconds_count"), 0.0);

    pg.send(alice, room, "measured").await;
    let relayed = c.recv_type("message").await;
    assert_eq!(relayed["message"]["message"], "measured", "{relayed}");
    let (_, body) = server.get("/metrics").await;
    assert_eq!(value_of(&body, "pgchat_listener_lag_seconds_count"), 1.0);
    // Same host, same clock: written and relayed well within a few seconds.
    let lag = value_of(&body, "pgchat_listener_lag_seconds_sum");
    assert!((0.0..5.0).contains(&lag), "lag {lag}");
    assert_eq!(
        value_of(&body, "pgchat_listener_lag_seconds_bucket{le=\"60\"}"),
        1.0
    );
    assert_eq!(value_of(&body, "pgchat_messages_out_total"), 1.0);

    // Gone from the room: nobody is present here any more.
    drop(c);
    let mut present = f64::NAN;
    for _ in 0..100 {
        let (_, body) = server.get("/metrics").await;
        present = value_of(&body, "pgchat_presence_users");
        if present == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(present, 0.0);
}
