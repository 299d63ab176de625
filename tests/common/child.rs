//! The real `pgchat serve` binary as a child process: for tests that measure the
//! server alone (its memory, its metrics from a fresh start), apart from the test's
//! own process.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::server::http_get;
use super::{TestDb, JWT_SECRET};

pub struct ChildServer {
    pub addr: SocketAddr,
    child: Child,
}

impl ChildServer {
    /// Starts `pgchat serve` for `db` with only the settings given here (the test's own
    /// environment is not passed on) and waits until it is ready.
    pub async fn start(db: &TestDb, extra: &[(&str, &str)]) -> ChildServer {
        // A free port: bound and released; nothing else on loopback races for it here.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgchat"));
        command
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", &db.authenticator_url)
            .env("JWT_SECRET", JWT_SECRET)
            .env("WS_HOST", "127.0.0.1")
            .env("WS_PORT", port.to_string())
            .env("DB_POOL_SIZE", "4")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("pgchat serve starts");
        let server = ChildServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        for _ in 0..200 {
            if server.get("/readyz").await.0 == 200 {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pgchat serve did not become ready");
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// Resident memory of the server process, in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server process is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for ChildServer {
    /// Stops the one process this helper started, by its id.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
