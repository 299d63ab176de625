//! The real `pgchat` binary as a child process whose stdout and stderr (its logs) are
//! captured, for tests that read what it printed or how it ended.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Captured {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    /// Starts `pgchat <args>` with only `env` (the test's own environment is not passed
    /// on, so `RUST_LOG` and the rest are exactly what the test says).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Captured {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgchat"));
        command
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("pgchat starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        copy_into(stdout, output.clone());
        copy_into(stderr, output.clone());
        Captured { child, output }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far, stdout and stderr interleaved by arrival.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Everything printed so far, as bytes (escape sequences and all).
    pub fn output_bytes(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle`; returns the output. Panics after
    /// `within`, or when the process ends first.
    pub async fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "pgchat ended ({status}) before printing `{needle}`:\n{}",
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pgchat did not print `{needle}` within {within:?}:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM to this one process.
    pub fn terminate(&self) {
        // SAFETY: kill(2) with the id of a child this value owns and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM delivered");
    }

    /// The exit status once the process ends, or None if it is still running after
    /// `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Captured {
    /// Stops the one process this helper started, by its id.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_into(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
}

/// A port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
