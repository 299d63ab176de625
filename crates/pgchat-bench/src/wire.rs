//! The bench's own minimal WebSocket client (RFC 6455): the opening handshake, masked
//! text frames out, server frames in.
//!
//! Why not tungstenite here: its reader zero-fills the whole read buffer on every read,
//! and the buffer keeps the capacity of the largest frame ever read. After a `joined`
//! reply listing 5,000 online users, every later read cleared ~200 KB, and the bench
//! spent 43 % of its CPU in `memset` — measuring itself instead of the server. This
//! reader keeps a fixed buffer (grown only while a bigger frame is in it) and reads
//! into it without clearing. Frames are parsed and checked by the daemon's own codec
//! ([`pgchat_ws`]), in the client's role.

use anyhow::{bail, Context};
use base64::Engine;
use pgchat_ws::{Decoder, Header, Incoming, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes kept for reading; a frame larger than this grows the buffer while it is read.
const READ_BUFFER: usize = 8192;
/// The longest handshake response accepted.
const MAX_RESPONSE_HEAD: usize = 8192;
/// The largest message accepted from the server: far above any `joined` reply.
const MAX_MESSAGE: usize = 64 << 20;
/// The code reported for a Close frame that carries none (RFC 6455 §7.1.5).
const NO_STATUS: u16 = 1005;

/// One complete message or control frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The close code (1005 when the frame carries none).
    Close(u16),
}

pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The codec's rules for a server's frames, and a fragmented message so far.
    decoder: Decoder,
    mask_state: u32,
}

impl Wire {
    /// Performs the opening handshake for `url` (`ws://host:port/path?query`).
    pub async fn connect(mut stream: TcpStream, url: &str, seed: u64) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .context("only ws:// URLs are supported")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // The key is 16 bytes (RFC 6455 §4.1); it need not be unpredictable here.
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&seed.to_le_bytes());
        nonce[8..].copy_from_slice(&(!seed).to_le_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;

        let mut wire = Wire {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            decoder: Decoder::new(Role::Client, MAX_MESSAGE),
            mask_state: (seed as u32) | 1,
        };
        let head_len = loop {
            if let Some(i) = find(&wire.buf[..wire.end], b"\r\n\r\n") {
                break i + 4;
            }
            if wire.end == MAX_RESPONSE_HEAD {
                bail!("handshake response head longer than {MAX_RESPONSE_HEAD} bytes");
            }
            let n = wire.stream.read(&mut wire.buf[wire.end..]).await?;
            if n == 0 {
                bail!("connection closed during the handshake");
            }
            wire.end += n;
        };
        let head = String::from_utf8_lossy(&wire.buf[..head_len]);
        let status = head.lines().next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            bail!("handshake refused: {status}");
        }
        let upgraded = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("upgrade:") && l.contains("websocket")
        });
        if !upgraded {
            bail!("handshake response does not upgrade to websocket");
        }
        wire.start = head_len;
        Ok(wire)
    }

    /// The next message or control frame. Cancel-safe: bytes are consumed only by the
    /// poll that returns a frame.
    pub async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            self.make_room();
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// Sends one text frame, masked as RFC 6455 requires of clients.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(pgchat_ws::TEXT, text.as_bytes()).await
    }

    pub async fn send_pong(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.send(pgchat_ws::PONG, payload).await
    }

    /// Sends a close frame (normal closure) and stops writing.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        self.send(pgchat_ws::CLOSE, &1000u16.to_be_bytes()).await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mask = self.next_mask();
        let frame = pgchat_ws::masked_frame(opcode, true, payload, mask);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// xorshift32: masks need not be secret between the bench and a local server.
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    /// Moves unparsed bytes to the front, and grows the buffer when a frame needs more.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUFFER {
                self.buf.truncate(READ_BUFFER);
                self.buf.shrink_to_fit();
            }
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let wanted = self.buf.len() * 2;
            self.buf.resize(wanted, 0);
        }
    }

    /// Takes one message or control frame from the buffer if it is complete.
    fn parse(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            let data = &mut self.buf[self.start..self.end];
            let Some((used, finished)) = self.decoder.decode(data)? else {
                // Grow up front for a large frame, so it is read in few calls.
                let needed = Header::parse(data).and_then(|h| h.frame_len());
                if let Some(needed) = needed.filter(|n| *n > self.buf.len() - self.start) {
                    let len = self.end - self.start;
                    self.buf.copy_within(self.start..self.end, 0);
                    self.start = 0;
                    self.end = len;
                    if needed > self.buf.len() {
                        self.buf.resize(needed, 0);
                    }
                }
                return Ok(None);
            };
            self.start += used;
            if let Some(message) = finished {
                return Ok(Some(match message {
                    Incoming::Text(text) => Frame::Text(text),
                    Incoming::Binary => Frame::Binary,
                    Incoming::Ping(payload) => Frame::Ping(payload),
                    Incoming::Pong => Frame::Pong,
                    Incoming::Close(code) => Frame::Close(code.unwrap_or(NO_STATUS)),
                }));
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
