//! `pgchat health [--ready]`: the container probe. It asks the daemon running beside it
//! for `/healthz` (or `/readyz`) over loopback and succeeds only on `200`, so an image
//! needs neither curl nor a shell to be probed, and podman's exec health checks and
//! Kubernetes' exec probes run the same command.
//!
//! One fixed request and a status line is all a probe needs, so this speaks that much
//! HTTP/1.1 itself rather than pulling in an HTTP client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;

/// Longest a probe may take: `/readyz` itself answers within a second, and orchestrators
/// give a probe a few (podman.yaml sets `timeoutSeconds: 3`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the probe failed; each renders as one line for the health check's log.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("no answer from http://{addr}{path} within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        path: &'static str,
        timeout: Duration,
    },
    #[error("http://{addr}{path}: {source}")]
    Io {
        addr: SocketAddr,
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("http://{addr}{path} answered `{status}`")]
    NotOk {
        addr: SocketAddr,
        path: &'static str,
        status: String,
    },
}

/// One probe of the daemon configured by `config`.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub timeout: Duration,
}

impl Probe {
    /// `/readyz` when `ready`, else `/healthz`, at the address the daemon listens on
    /// (loopback when it listens on every address).
    pub fn for_config(config: &Config, ready: bool) -> Probe {
        let host = match config.ws_host {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Probe {
            addr: SocketAddr::new(host, config.ws_port),
            path: if ready { "/readyz" } else { "/healthz" },
            timeout: PROBE_TIMEOUT,
        }
    }

    /// Succeeds when the daemon answers `200` within the timeout.
    pub async fn check(&self) -> Result<(), HealthError> {
        let status = tokio::time::timeout(self.timeout, self.status_line())
            .await
            .map_err(|_| HealthError::Timeout {
                addr: self.addr,
                path: self.path,
                timeout: self.timeout,
            })?
            .map_err(|source| HealthError::Io {
                addr: self.addr,
                path: self.path,
                source,
            })?;
        match status.split(' ').nth(1) {
            Some("200") if status.starts_with("HTTP/1.") => Ok(()),
            _ => Err(HealthError::NotOk {
                addr: self.addr,
                path: self.path,
                status,
            }),
        }
    }

    /// Sends the request and returns the response's first line.
    async fn status_line(&self) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(self.addr).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pgchat-health\r\nConnection: close\r\n\r\n",
            self.path, self.addr
        );
        stream.write_all(request.as_bytes()).await?;
        // The status line is short; stop at its end or after 256 bytes.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 256 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        Ok(String::from_utf8_lossy(line).trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn config(host: &str, port: u16) -> Config {
        Config::from_pairs([
            ("JWT_SECRET", "a-secret-of-at-least-thirty-two-chars!"),
            ("WS_HOST", host),
            ("WS_PORT", &port.to_string()),
        ])
        .unwrap()
    }

    #[test]
    fn probes_loopback_when_the_daemon_listens_everywhere() {
        let probe = Probe::for_config(&config("0.0.0.0", 3001), true);
        assert_eq!(probe.addr, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(probe.path, "/readyz");
        let probe = Probe::for_config(&config("::", 4000), false);
        assert_eq!(probe.addr, "[::1]:4000".parse().unwrap());
        assert_eq!(probe.path, "/healthz");
        let probe = Probe::for_config(&config("127.0.0.2", 5000), false);
        assert_eq!(probe.addr, "127.0.0.2:5000".parse().unwrap());
    }

    /// A server that answers one connection with `reply` (or nothing, when `None`).
    async fn one_shot(reply: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf).await;
            match reply {
                Some(reply) => socket.write_all(reply.as_bytes()).await.unwrap(),
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
        });
        addr
    }

    fn probe(addr: SocketAddr) -> Probe {
        Probe {
            addr,
            path: "/readyz",
            timeout: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn only_200_is_healthy() {
        let ok = one_shot(Some("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n")).await;
        probe(ok).check().await.unwrap();

        let unavailable = one_shot(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n")).await;
        let err = probe(unavailable).check().await.unwrap_err();
        assert!(
            matches!(&err, HealthError::NotOk { status, .. } if status == "HTTP/1.1 503 Service Unavailable"),
            "{err}"
        );

        let garbage = one_shot(Some("200 OK\r\n")).await;
        assert!(matches!(
            probe(garbage).check().await,
            Err(HealthError::NotOk { .. })
        ));
    }

    #[tokio::test]
    async fn a_silent_or_absent_daemon_fails_in_time() {
        let silent = one_shot(None).await;
        let started = std::time::Instant::now();
        assert!(matches!(
            probe(silent).check().await,
            Err(HealthError::Timeout { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));

        // Nothing listens on a port just released.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            probe(closed).check().await,
            Err(HealthError::Io { .. })
        ));
    }
}
