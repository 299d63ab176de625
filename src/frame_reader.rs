//! Reads client-to-server WebSocket frames (RFC 6455 §5) and holds no memory while
//! the connection is idle.
//!
//! tungstenite kept a 512-byte read buffer (grown to the largest frame, and zero-filled
//! on every read) plus two boxed wakers for every connection. Here a read lands in a
//! stack buffer inside the poll; only the bytes of a frame that is not complete yet are
//! kept on the heap, and nothing once they are consumed.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes taken from the socket per read.
const READ_CHUNK: usize = 2048;

/// One complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The peer's close code, if it sent one.
    Close(Option<u16>),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// Close with 1009.
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    /// Close with 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Close with 1007.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
}

pub struct FrameReader {
    /// Received bytes not yet parsed; empty (unallocated) between frames.
    pending: Vec<u8>,
    /// A fragmented message being reassembled: (is text, payload so far).
    message: Option<(bool, Vec<u8>)>,
    max_message: usize,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl FrameReader {
    /// `early` are bytes read past the HTTP upgrade request.
    pub fn new(max_message: usize, early: Vec<u8>) -> Self {
        Self {
            pending: early,
            message: None,
            max_message,
        }
    }

    /// The next message or control frame; `None` at end of stream. Cancel-safe: bytes
    /// read are kept in `self` before the poll returns.
    pub fn poll_next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming, ReadError>>> {
        loop {
            match self.parse() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            if buf.filled().is_empty() {
                return Poll::Ready(None);
            }
            self.pending.extend_from_slice(buf.filled());
        }
    }

    pub async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Option<Result<Incoming, ReadError>> {
        std::future::poll_fn(|cx| self.poll_next(stream, cx)).await
    }

    /// Takes complete frames off `pending` until one finishes a message.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(h) = self.header()? else {
                return Ok(None);
            };
            let end = h.header_len + h.payload_len;
            if self.pending.len() < end {
                return Ok(None);
            }
            let mut payload = self.pending[h.header_len..end].to_vec();
            unmask(&mut payload, h.mask);
            self.consume(end);
            if let Some(done) = self.on_frame(h.fin, h.opcode, payload)? {
                return Ok(Some(done));
            }
        }
    }

    fn header(&self) -> Result<Option<Header>, ReadError> {
        let b = &self.pending;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x70 != 0 {
            return Err(ReadError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        if b[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let (len_bytes, len) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (2, u64::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (8, u64::from_be_bytes(n))
            }
            126 | 127 => return Ok(None),
            n => (0, u64::from(n)),
        };
        let opcode = b[0] & 0x0F;
        let fin = b[0] & 0x80 != 0;
        if opcode >= 0x8 && (!fin || len > 125) {
            return Err(ReadError::Protocol(
                "control frames are short and unfragmented",
            ));
        }
        // Refused from the header alone: an oversized frame is never buffered.
        let so_far = self.message.as_ref().map_or(0, |(_, m)| m.len() as u64);
        if len.saturating_add(so_far) > self.max_message as u64 {
            return Err(ReadError::TooBig(self.max_message));
        }
        let header_len = 2 + len_bytes + 4;
        if b.len() < header_len {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&b[header_len - 4..header_len]);
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len,
            payload_len: len as usize,
        }))
    }

    /// Drops `n` parsed bytes; an empty buffer gives its memory back.
    fn consume(&mut self, n: usize) {
        if n == self.pending.len() {
            self.pending = Vec::new();
        } else {
            self.pending.drain(..n);
        }
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<Incoming>, ReadError> {
        let (is_text, whole) = match opcode {
            0x1 | 0x2 => {
                if self.message.is_some() {
                    return Err(ReadError::Protocol("new message before the last one ended"));
                }
                if !fin {
                    self.message = Some((opcode == 0x1, payload));
                    return Ok(None);
                }
                (opcode == 0x1, payload)
            }
            0x0 => {
                let Some((is_text, mut so_far)) = self.message.take() else {
                    return Err(ReadError::Protocol("continuation without a message"));
                };
                so_far.extend_from_slice(&payload);
                if !fin {
                    self.message = Some((is_text, so_far));
                    return Ok(None);
                }
                (is_text, so_far)
            }
            0x8 => return close_code(&payload).map(|code| Some(Incoming::Close(code))),
            0x9 => return Ok(Some(Incoming::Ping(payload))),
            0xA => return Ok(Some(Incoming::Pong)),
            _ => return Err(ReadError::Protocol("unknown opcode")),
        };
        if !is_text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(whole)
            .map(|text| Some(Incoming::Text(text)))
            .map_err(|_| ReadError::InvalidUtf8)
    }
}

/// The code of a client's Close frame (RFC 6455 §5.5.1, §7.4): none for an empty
/// payload; otherwise a code that may be sent on the wire, then a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("a close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !crate::protocol::close::may_be_sent(code) {
                return Err(ReadError::Protocol("a close code that may not be sent"));
            }
            std::str::from_utf8(reason)
                .map_err(|_| ReadError::Protocol("a close reason that is not UTF-8"))?;
            Ok(Some(code))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        crate::frame_writer::masked_frame(opcode, fin, payload, [0x11, 0x22, 0x33, 0x44])
    }

    fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let mut reader = FrameReader::new(max, Vec::new());
        let mut stream: &[u8] = &bytes;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        loop {
            match reader.poll_next(&mut stream, &mut cx) {
                Poll::Ready(Some(Ok(m))) => out.push(Ok(m)),
                Poll::Ready(Some(Err(e))) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
                Poll::Ready(None) | Poll::Pending => return out,
            }
        }
    }

    #[test]
    fn frames_of_every_length_form_and_fragments() {
        let big = "é".repeat(40_000); // 80,000 bytes: the 64-bit length form
        let mut bytes = frame(true, 0x1, b"hi");
        bytes.extend(frame(true, 0x1, "x".repeat(300).as_bytes()));
        bytes.extend(frame(true, 0x1, big.as_bytes()));
        bytes.extend(frame(false, 0x1, b"fr"));
        bytes.extend(frame(true, 0x9, b"p")); // a ping between fragments
        bytes.extend(frame(true, 0x0, b"ag"));
        bytes.extend(frame(true, 0x2, b"\x00"));
        bytes.extend(frame(true, 0x8, &1000u16.to_be_bytes()));
        let got = read_all(bytes, 100_000);
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text("hi".into())),
                Ok(Incoming::Text("x".repeat(300))),
                Ok(Incoming::Text(big)),
                Ok(Incoming::Ping(b"p".to_vec())),
                Ok(Incoming::Text("frag".into())),
                Ok(Incoming::Binary),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[test]
    fn close_frames_are_validated() {
        let close = |payload: &[u8]| read_all(frame(true, 0x8, payload), 100).remove(0);
        let with_code = |code: u16, reason: &[u8]| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason);
            close(&p)
        };
        assert_eq!(close(b""), Ok(Incoming::Close(None)));
        for code in [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4000, 4999] {
            assert_eq!(
                with_code(code, "bye é".as_bytes()),
                Ok(Incoming::Close(Some(code)))
            );
        }
        assert!(close(&[0x03]).is_err_and(|e| e.contains("one byte")));
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(
                with_code(code, b"").is_err_and(|e| e.contains("may not be sent")),
                "{code}"
            );
        }
        assert!(with_code(1000, &[b'o', 0xC3]).is_err_and(|e| e.contains("UTF-8")));
    }

    #[test]
    fn byte_at_a_time_delivery_still_parses() {
        let bytes = frame(true, 0x1, "slow".repeat(40).as_bytes());
        let mut reader = FrameReader::new(1000, Vec::new());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut got = None;
        for b in &bytes {
            let mut one: &[u8] = std::slice::from_ref(b);
            if let Poll::Ready(Some(r)) = reader.poll_next(&mut one, &mut cx) {
                got = Some(r.unwrap());
            }
        }
        assert_eq!(got, Some(Incoming::Text("slow".repeat(40))));
        assert!(
            reader.pending.capacity() == 0,
            "nothing kept after the frame"
        );
    }

    #[test]
    fn oversized_unmasked_reserved_and_bad_text_are_refused() {
        let too_big = read_all(frame(true, 0x1, &[b'a'; 101]), 100);
        assert!(matches!(too_big.last(), Some(Err(e)) if e.contains("larger than 100")));
        let mut unmasked = frame(true, 0x1, b"a");
        unmasked[1] &= 0x7F;
        assert!(read_all(unmasked, 100)[0]
            .as_ref()
            .is_err_and(|e| e.contains("masked")));
        let mut rsv = frame(true, 0x1, b"a");
        rsv[0] |= 0x40;
        assert!(read_all(rsv, 100)[0].is_err());
        assert!(read_all(frame(true, 0x1, &[0xFF, 0xFE]), 100)[0]
            .as_ref()
            .is_err_and(|e| e.contains("UTF-8")));
        assert!(read_all(frame(true, 0x0, b"a"), 100)[0].is_err());
        assert!(read_all(frame(false, 0x9, b"a"), 100)[0].is_err());
        // Fragments add up against the limit.
        let mut parts = frame(false, 0x1, &[b'a'; 60]);
        parts.extend(frame(true, 0x0, &[b'a'; 60]));
        assert!(read_all(parts, 100)[0]
            .as_ref()
            .is_err_and(|e| e.contains("larger")));
    }
}
