//! The daemon's logs, read from a child process's captured output: refusals say who and
//! why at info, LISTEN reconnects are warnings, and nothing secret is written even at
//! `RUST_LOG=trace`.

use crate::common;

use std::time::Duration;

use common::captured::{free_port, Captured};
use common::server::{http_get, token_for, Client};
use serde_json::json;

const PASSWORD: &str = "sentinel-password-Qx7Wv2";
const MESSAGE: &str = "sentinel message text Kp3Zr8";
const FORGED_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzZW50aW5lbCI6InRva2VuIn0.sentinelSig9Tq4Lm";

fn static_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgchat-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    dir
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The line of `out` that has every one of `parts`; panics when there is none.
fn line_with<'a>(out: &'a str, parts: &[&str]) -> &'a str {
    out.lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no log line with {parts:?} in:\n{out}"))
}

/// `pgchat demo` signs its users up with their password as a statement parameter, which
/// the database driver would log at debug: the password, a message's text and every
/// token (forged, expired, genuine) stay out of a trace-level log.
#[tokio::test]
async fn trace_logs_carry_no_password_message_text_or_token() {
    let db = common::TestDb::new().await;
    let port = free_port();
    let dir = static_dir("logs-test");
    let port_text = port.to_string();
    let mut demo = Captured::spawn(
        &["demo"],
        &[
            ("ADMIN_DATABASE_URL", db.admin_url.as_str()),
            ("DATABASE_URL", db.authenticator_url.as_str()),
            ("JWT_SECRET", common::JWT_SECRET),
            ("WS_PORT", port_text.as_str()),
            ("STATIC_DIR", dir.to_str().unwrap()),
            ("DEMO_PASSWORD", PASSWORD),
            ("RUST_LOG", "trace"),
        ],
    );
    let out = demo
        .wait_for("pgchat listening", Duration::from_secs(60))
        .await;
    let token = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Alice: "))
        .and_then(|url| url.split_once("#token="))
        .map(|(_, t)| t.to_string())
        .expect("a URL for Alice");

    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut c = Client::connect(&url).await;
    let forged = c
        .request(json!({"type": "auth", "token": FORGED_TOKEN}))
        .await;
    assert_eq!(forged["code"], "invalid_token", "{forged}");
    let me = c.request(json!({"type": "auth", "token": token})).await;
    assert_eq!(me["type"], "authenticated", "{me}");
    let alice = me["user"]["id"].as_i64().unwrap();
    let expired = token_for(alice, Some(-3600));
    let refused = c.request(json!({"type": "auth", "token": expired})).await;
    assert_eq!(refused["code"], "token_expired", "{refused}");

    let room = c
        .request(json!({"type": "create_room", "name": "Logs", "description": "t"}))
        .await;
    let room_id = room["room"]["id"].as_i64().expect("a room");
    let joined = c.request(json!({"type": "join", "roomId": room_id})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let stranger_room = c
        .request(json!({"type": "join", "roomId": 987654321}))
        .await;
    assert_eq!(stranger_room["type"], "error", "{stranger_room}");
    let ack = c
        .request(json!({"type": "message", "roomId": room_id, "message": MESSAGE}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // The relayed copy arrives: the whole path ran, under trace.
    let relayed = c.recv_type("message").await;
    assert_eq!(relayed["message"]["message"], MESSAGE, "{relayed}");

    demo.terminate();
    demo.wait_exit(Duration::from_secs(10))
        .await
        .expect("the demo exits after SIGTERM");
    let out = demo.output();
    let _ = std::fs::remove_dir_all(dir);

    // It was a trace log: the daemon's debug events are there.
    assert!(out.contains("DEBUG") || out.contains("TRACE"), "{out}");
    // Refusals at info, with the user when the token was genuine, and the reason.
    let line = line_with(
        &out,
        &["INFO", "authentication refused", "code=\"invalid_token\""],
    );
    assert!(line.contains("reason="), "{line}");
    let line = line_with(
        &out,
        &["INFO", "authentication refused", "code=\"token_expired\""],
    );
    assert!(line.contains(&format!("user={alice}")), "{line}");
    let line = line_with(&out, &["INFO", "join refused", "room=987654321"]);
    assert!(
        line.contains(&format!("user={alice}")) && line.contains("reason="),
        "{line}"
    );

    let mut secrets = vec![
        PASSWORD.to_string(),
        hex(PASSWORD.as_bytes()),
        MESSAGE.to_string(),
        hex(MESSAGE.as_bytes()),
        "Kp3Zr8".to_string(),
    ];
    for t in [FORGED_TOKEN, token.as_str(), expired.as_str()] {
        secrets.push(t.to_string());
        // A signature alone would do as much harm as the token.
        secrets.push(t.rsplit('.').next().unwrap().to_string());
    }
    // The demo prints each user's link with its token on purpose; the log is the rest.
    let log: String = out
        .lines()
        .filter(|l| {
            !["Alice: ", "Bob: "]
                .iter()
                .any(|p| l.trim_start().starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("\n");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "`{secret}` is in the log:\n{}",
            line_with(&log, &[secret])
        );
    }
}

/// A LISTEN connection cut by the database is re-made, and the log says so at warn.
#[tokio::test]
async fn a_listen_reconnect_is_a_warning() {
    let db = common::TestDb::new().await;
    let port = free_port();
    let port_text = port.to_string();
    let mut server = Captured::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", db.authenticator_url.as_str()),
            ("JWT_SECRET", common::JWT_SECRET),
            ("WS_HOST", "127.0.0.1"),
            ("WS_PORT", port_text.as_str()),
            ("DB_POOL_SIZE", "4"),
            ("RUST_LOG", "info"),
        ],
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    server
        .wait_for("pgchat listening", Duration::from_secs(30))
        .await;
    let admin = db.admin().await;
    // Ready means LISTEN is up: only then is there a listener to cut.
    for _ in 0..200 {
        if http_get(addr, "/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut = admin
        .query(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = current_database() and application_name = 'pgchat-listener'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 1, "one LISTEN connection");

    let out = server
        .wait_for("LISTEN re-established", Duration::from_secs(20))
        .await;
    let line = line_with(&out, &["re-making the LISTEN connection"]);
    assert!(line.contains("WARN"), "{line}");
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "pgchat_listener_reconnects_total 1"),
        "{metrics}"
    );
}
