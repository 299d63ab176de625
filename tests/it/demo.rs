//! `pgchat demo` as a user runs it: a child process with its output piped (not a
//! terminal), a browser-like client holding a keep-alive HTTP connection and a socket.

use crate::common;

use std::time::{Duration, Instant};

use common::captured::{free_port, Captured};
use common::server::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A static directory of our own: the repository's frontend would need its npm packages.
fn static_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgchat-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    dir
}

/// Reads one HTTP response (headers and a Content-Length body) off a keep-alive stream.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the server closed before answering");
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn the_demo_listens_on_loopback_logs_plainly_and_stops_at_once_with_tabs_open() {
    let db = common::TestDb::new().await;
    let port = free_port().to_string();
    let dir = static_dir();
    let mut demo = Captured::spawn(
        &["demo"],
        &[
            ("ADMIN_DATABASE_URL", db.admin_url.as_str()),
            ("DATABASE_URL", db.authenticator_url.as_str()),
            ("JWT_SECRET", common::JWT_SECRET),
            ("WS_PORT", port.as_str()),
            ("STATIC_DIR", dir.to_str().unwrap()),
            ("RUST_LOG", "info"),
        ],
    );
    let out = demo
        .wait_for("pgchat listening", Duration::from_secs(60))
        .await;

    // Without WS_HOST the demo listens on loopback only, and says so.
    let listening = out
        .lines()
        .find(|l| l.contains("pgchat listening"))
        .unwrap();
    assert!(
        listening.contains(&format!("addr=127.0.0.1:{port}")),
        "{listening}"
    );
    // Piped output carries no colour escapes.
    assert!(
        !demo.output_bytes().contains(&0x1b),
        "escape sequences in piped output:\n{out:?}"
    );
    // One URL per demo user, with a token that opens a socket.
    let token = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Alice: "))
        .and_then(|url| url.split_once("#token="))
        .map(|(_, t)| t.to_string())
        .expect("a URL for Alice");

    // A tab: the page's keep-alive HTTP connection and its socket.
    let mut page = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
        .await
        .unwrap();
    page.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut page).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut socket = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    let reply = socket
        .request(json!({"type": "auth", "token": token}))
        .await;
    assert_eq!(reply["type"], "authenticated", "{reply}");

    let stopped = Instant::now();
    demo.terminate();
    // The socket is told the server is going away; the idle page connection is closed.
    assert_eq!(socket.close_code(Duration::from_secs(4)).await, Some(1001));
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(4), page.read_to_end(&mut rest)).await;
    assert!(
        eof.is_ok(),
        "the keep-alive connection stayed open after SIGTERM"
    );
    let status = demo
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the demo exits after SIGTERM");
    let took = stopped.elapsed();
    let out = demo.output();
    assert!(status.success(), "{status}:\n{out}");
    assert!(out.contains("shutting down"), "{out}");
    assert!(!out.contains("did not close"), "{out}");
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} to stop:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
