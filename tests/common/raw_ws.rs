//! A WebSocket client over a raw TCP socket, for what a library client will not do:
//! pick its source address, shrink its receive buffer, send forbidden close frames,
//! and see the exact bytes the server put on the wire (`use crate::common::raw_ws;`).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;

/// A TCP connection from `source` (any 127.x.y.z is loopback) to `addr`, with the
/// kernel's smallest receive buffer when `small_buffer` is set.
pub async fn tcp(source: IpAddr, addr: SocketAddr, small_buffer: bool) -> TcpStream {
    try_tcp(source, addr, small_buffer)
        .await
        .expect("tcp connects")
}

pub async fn try_tcp(
    source: IpAddr,
    addr: SocketAddr,
    small_buffer: bool,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// An upgrade request for `/ws`; `version` is the `Sec-WebSocket-Version` (none: omitted).
pub fn upgrade_request(version: Option<&str>, extra_headers: &str) -> String {
    let version = version
        .map(|v| format!("Sec-WebSocket-Version: {v}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{version}{extra_headers}\r\n"
    )
}

pub struct RawWs {
    pub stream: TcpStream,
    /// Bytes read and not parsed yet.
    pub buf: Vec<u8>,
}

impl RawWs {
    /// Sends `request` and reads the response head: (status, head, the connection).
    pub async fn handshake(mut stream: TcpStream, request: &str) -> (u16, String, RawWs) {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("a response in time")
                .unwrap_or(0);
            assert!(
                n > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rest = buf[end..].to_vec();
        (status, head, RawWs { stream, buf: rest })
    }

    /// Upgrades `stream` (version 13), asserting the server switched protocols.
    pub async fn upgrade(stream: TcpStream) -> RawWs {
        let (status, head, ws) = Self::handshake(stream, &upgrade_request(Some("13"), "")).await;
        assert_eq!(status, 101, "{head}");
        ws
    }

    /// Sends one masked, final frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let frame = pgchat::frame_writer::masked_frame(opcode, true, payload, [7, 1, 3, 9]);
        self.stream.write_all(&frame).await.unwrap();
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send(TEXT, v.to_string().as_bytes()).await;
    }

    /// The next whole frame within `wait`: (opcode, payload); `None` at EOF or timeout.
    pub async fn frame(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (mut frames, used) = parse_frames(&self.buf, 1);
            if let Some(f) = frames.pop() {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Skips frames until a text frame of JSON `type` `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let (op, payload) = self
                .frame(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("no `{kind}` frame arrived"));
            if op == TEXT {
                let v: Value = serde_json::from_slice(&payload).expect("server sends JSON");
                if v["type"] == kind {
                    return v;
                }
            }
        }
    }

    /// Everything left on the wire until the server ends the connection.
    pub async fn read_to_end(&mut self, wait: Duration) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.buf);
        tokio::time::timeout(wait, self.stream.read_to_end(&mut all))
            .await
            .expect("the server ends the connection in time")
            .ok();
        all
    }
}

/// Server frames (unmasked) at the start of `bytes`, at most `max`: (opcode, payload)
/// for each whole frame, and how many bytes they took. A frame cut short is not
/// returned: whatever follows the last whole frame is `bytes[used..]`.
pub fn parse_frames(bytes: &[u8], max: usize) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while frames.len() < max && bytes.len() >= at + 2 {
        let b = &bytes[at..];
        assert_eq!(b[0] & 0x70, 0, "reserved bits at byte {at}");
        assert_eq!(b[1] & 0x80, 0, "a server frame is never masked (byte {at})");
        let (head, len) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => (
                10,
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            ),
            126 | 127 => break,
            n => (2, n as usize),
        };
        if b.len() < head + len {
            break;
        }
        frames.push((b[0] & 0x0F, b[head..head + len].to_vec()));
        at += head + len;
    }
    (frames, at)
}

/// The code of a Close frame's payload (`None`: empty payload).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A counter's value in a `/metrics` text: the sum of the series named `name` (with
/// `label`, e.g. `code="1002"`, when given); 0 when absent.
pub fn metric(metrics: &str, name: &str, label: Option<&str>) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| label.is_none_or(|lv| l.contains(lv)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}
