//! Reads client-to-server WebSocket frames off the socket and holds no memory while
//! the connection is idle. The rules of RFC 6455 are the codec's ([`pgchat_ws::Decoder`]);
//! this module is the socket-facing part.
//!
//! tungstenite kept a 512-byte read buffer (grown to the largest frame, and zero-filled
//! on every read) plus two boxed wakers for every connection. Here a read lands in a
//! stack buffer inside the poll; only the bytes of a frame that is not complete yet are
//! kept on the heap, and nothing once they are consumed.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pgchat_ws::{Decoder, FrameError, Role};
use tokio::io::{AsyncRead, ReadBuf};

pub use pgchat_ws::Incoming;

/// Bytes taken from the socket per read.
const READ_CHUNK: usize = 2048;

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

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooBig(max) => ReadError::TooBig(max),
            FrameError::Protocol(why) => ReadError::Protocol(why),
            FrameError::InvalidUtf8 => ReadError::InvalidUtf8,
        }
    }
}

pub struct FrameReader {
    /// Received bytes not yet parsed; empty (unallocated) between frames.
    pending: Vec<u8>,
    decoder: Decoder,
}

impl FrameReader {
    /// `early` are bytes read past the HTTP upgrade request.
    pub fn new(max_message: usize, early: Vec<u8>) -> Self {
        Self {
            pending: early,
            decoder: Decoder::new(Role::Server, max_message),
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
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
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
    fn parse(&mut self) -> Result<Option<Incoming>, FrameError> {
        while let Some((used, finished)) = self.decoder.decode(&mut self.pending)? {
            self.consume(used);
            if finished.is_some() {
                return Ok(finished);
            }
        }
        Ok(None)
    }

    /// Drops `n` parsed bytes; an empty buffer gives its memory back.
    fn consume(&mut self, n: usize) {
        if n == self.pending.len() {
            self.pending = Vec::new();
        } else {
            self.pending.drain(..n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        pgchat_ws::masked_frame(opcode, fin, payload, [0x11, 0x22, 0x33, 0x44])
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
