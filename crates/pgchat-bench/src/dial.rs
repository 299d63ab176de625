//! Opening one socket: TCP from a loopback source address, the WebSocket handshake and
//! `auth`. Joining is the caller's, because a first join and a resume read differently.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{anyhow, bail, Context};
use tokio::net::TcpSocket;

use crate::clients::{Options, Server};
use crate::frames::{self, Incoming};
use crate::wire::{Frame, Wire};

/// Connects socket `index` to `server` and authenticates it with `token`.
pub async fn dial(
    opts: &Options,
    server: &Server,
    index: u64,
    token: &str,
) -> anyhow::Result<Wire> {
    let socket = TcpSocket::new_v4()?;
    if server.addr.ip().is_loopback() {
        // One source address has ~28,000 ephemeral ports: spread over several.
        let host = 1 + (index % u64::from(opts.sources)) as u8;
        socket
            .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
            .with_context(|| format!("binding 127.0.0.{host}"))?;
    }
    let stream = socket.connect(server.addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let mut ws = Wire::connect(stream, &server.url, index)
        .await
        .context("WebSocket handshake")?;
    ws.send_text(&frames::auth(token)).await?;
    wait_for(&mut ws, |f| f.kind == "authenticated").await?;
    Ok(ws)
}

/// Reads frames until one satisfies `want` and returns its `lastSeq` (a `joined`
/// reply's); an `error` frame or a close fails.
pub async fn wait_for(
    ws: &mut Wire,
    want: impl Fn(&Incoming) -> bool,
) -> anyhow::Result<Option<i64>> {
    while let Some(frame) = ws.next().await? {
        if let Frame::Ping(payload) = &frame {
            ws.send_pong(payload).await?;
        }
        if let Frame::Close(code) = frame {
            bail!("connection closed by the server with {code}");
        }
        if let Frame::Text(text) = frame {
            let Some(f) = Incoming::parse(&text) else {
                continue;
            };
            if want(&f) {
                return Ok(f.last_seq);
            }
            if f.kind == "error" {
                let detail = f.error_text().unwrap_or_default();
                bail!(
                    "server error {}: {detail}",
                    f.code.as_deref().unwrap_or("?")
                );
            }
        }
    }
    Err(anyhow!("connection closed by the server"))
}
