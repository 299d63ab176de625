//! The decoder on any bytes: it never panics, never claims more bytes than it was
//! given, takes exactly one frame's bytes, and decodes the same stream the same way
//! however the bytes are split between reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgchat_ws::{Decoder, FrameError, Header, Incoming, Role};

/// Every message and the failure, if any, of `bytes` delivered in `chunk`-byte reads.
fn decode(role: Role, max: usize, bytes: &[u8], chunk: usize) -> Vec<Result<Incoming, FrameError>> {
    let mut decoder = Decoder::new(role, max);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for part in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(part);
        loop {
            let frame_len = Header::parse(&buf).and_then(|h| h.frame_len());
            match decoder.decode(&mut buf) {
                Ok(Some((used, finished))) => {
                    assert!(used <= buf.len());
                    assert_eq!(Some(used), frame_len, "one whole frame is taken");
                    buf.drain(..used);
                    out.extend(finished.map(Ok));
                }
                Ok(None) => {
                    assert!(frame_len.is_none_or(|n| n > buf.len()), "a whole frame left");
                    break;
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the role, the message limit and how reads split the rest.
    let Some((&config, bytes)) = data.split_first() else {
        return;
    };
    let role = if config & 1 == 0 { Role::Server } else { Role::Client };
    let max = [0, 10, 125, 1000, 1 << 16, usize::MAX][usize::from(config >> 1 & 7) % 6];
    let chunk = usize::from(config >> 4) + 1;
    let whole = decode(role, max, bytes, bytes.len());
    assert_eq!(whole, decode(role, max, bytes, chunk));
    for message in &whole {
        if let Ok(Incoming::Ping(p)) = message {
            assert!(p.len() <= 125);
        }
        if let Ok(Incoming::Text(t)) = message {
            assert!(t.len() <= max);
        }
    }
});
