//! The codec against tungstenite's frame parser, on random and mutated inputs: the same
//! headers, and, reading as a server, the same messages and the same kind of failure.
//! Where the two differ on purpose, the difference is named and bounded here:
//! - this codec refuses a frame from its first bytes; tungstenite reads it whole
//!   first, so at the end of the input it may see an unfinished frame where this codec
//!   has already failed;
//! - close code 1014 (registered by IANA) is accepted; tungstenite refuses it;
//! - a Close reason that is not UTF-8 is a protocol error here (1002), tungstenite
//!   reports it as invalid UTF-8;
//! - tungstenite checks the UTF-8 of each fragment as it arrives, this codec the
//!   message once whole: after an invalid fragment it may deliver control frames that
//!   tungstenite never reads;
//! - tungstenite checks its frame limit (it must have one here: it reserves a frame's
//!   claimed length) before anything else about the frame, this codec after masking,
//!   reserved bits, opcodes and the control-frame rules: a frame claiming more than
//!   that limit and breaking one of those rules is too big for tungstenite and a
//!   protocol error here.

use std::io::{self, Cursor, Read, Write};

use pgchat_ws::{Decoder, FrameError, Header, Incoming, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};

/// Above every message limit used here.
const TUNGSTENITE_FRAME_LIMIT: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The input ran out (after whole frames or inside one).
    Eof,
    Closed,
    Protocol,
    TooBig,
    Utf8,
}

#[derive(Debug)]
struct Outcome {
    messages: Vec<Msg>,
    end: End,
}

/// What this codec makes of `input`, with what it knew when it stopped.
struct Ours {
    outcome: Outcome,
    /// The bytes left at a failure were not one complete frame.
    failed_on_unfinished_frame: bool,
    /// The frame it failed on was a Close.
    failed_on_close: bool,
    /// A fragmented text message was open when it failed.
    text_open_at_end: bool,
    /// It failed on a frame claiming more than tungstenite's frame limit.
    failed_on_huge_frame: bool,
}

fn ours(input: &[u8], max: usize) -> Ours {
    let mut decoder = Decoder::new(Role::Server, max);
    let mut buf = input.to_vec();
    let mut messages = Vec::new();
    let mut text_open = false;
    loop {
        let first = buf.first().copied();
        let opcode = first.map(|b| b & 0x0F);
        match decoder.decode(&mut buf) {
            Ok(Some((used, finished))) => {
                let fin = first.is_some_and(|b| b & 0x80 != 0);
                match opcode {
                    Some(0x1) if !fin => text_open = true,
                    Some(0x0..=0x2) if fin => text_open = false,
                    _ => {}
                }
                buf.drain(..used);
                let Some(m) = finished else { continue };
                let closed = matches!(m, Incoming::Close(_));
                messages.push(match m {
                    Incoming::Text(t) => Msg::Text(t),
                    Incoming::Binary => Msg::Binary,
                    Incoming::Ping(p) => Msg::Ping(p),
                    Incoming::Pong => Msg::Pong,
                    Incoming::Close(c) => Msg::Close(c),
                });
                if closed {
                    return finish(messages, End::Closed, &buf, false, text_open);
                }
            }
            Ok(None) => return finish(messages, End::Eof, &buf, false, text_open),
            Err(e) => {
                let end = match e {
                    FrameError::TooBig(_) => End::TooBig,
                    FrameError::Protocol(_) => End::Protocol,
                    FrameError::InvalidUtf8 => End::Utf8,
                };
                return finish(messages, end, &buf, opcode == Some(0x8), text_open);
            }
        }
    }
}

fn finish(messages: Vec<Msg>, end: End, rest: &[u8], on_close: bool, text_open: bool) -> Ours {
    let whole = Header::parse(rest)
        .and_then(|h| h.frame_len())
        .is_some_and(|n| n <= rest.len());
    let huge = pgchat_ws::header::payload_len(rest)
        .is_some_and(|(n, _)| n > TUNGSTENITE_FRAME_LIMIT as u64);
    Ours {
        outcome: Outcome { messages, end },
        failed_on_unfinished_frame: !whole,
        failed_on_close: on_close,
        text_open_at_end: text_open,
        failed_on_huge_frame: huge,
    }
}

/// Reads `input` and swallows what tungstenite writes back (pongs, the close reply).
struct Replay(Cursor<Vec<u8>>);

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn theirs(input: &[u8], max: usize) -> Outcome {
    // tungstenite reserves a frame's claimed length before reading it: its own frame
    // limit keeps a mutated length from asking for exabytes.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(TUNGSTENITE_FRAME_LIMIT));
    let mut ws = WebSocket::from_raw_socket(
        Replay(Cursor::new(input.to_vec())),
        TRole::Server,
        Some(config),
    );
    let mut messages = Vec::new();
    let end = loop {
        match ws.read() {
            Ok(Message::Text(t)) => messages.push(Msg::Text(t.as_str().to_owned())),
            Ok(Message::Binary(_)) => messages.push(Msg::Binary),
            Ok(Message::Ping(p)) => messages.push(Msg::Ping(p.to_vec())),
            Ok(Message::Pong(_)) => messages.push(Msg::Pong),
            Ok(Message::Close(close)) => match close {
                // tungstenite's stand-in for a code that may not be sent.
                Some(c) if c.code == CloseCode::Protocol && c.reason == "Protocol violation" => {
                    break End::Protocol
                }
                c => {
                    messages.push(Msg::Close(c.map(|c| u16::from(c.code))));
                    break End::Closed;
                }
            },
            Ok(Message::Frame(_)) => unreachable!("not returned by read"),
            Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => break End::Eof,
            Err(Error::Protocol(_)) => break End::Protocol,
            Err(Error::Capacity(_)) => break End::TooBig,
            Err(Error::Utf8) => break End::Utf8,
            Err(other) => panic!("unexpected {other:?} on {input:?}"),
        }
    };
    Outcome { messages, end }
}

/// Which named difference explains a disagreement; `None` if none does.
fn explained(o: &Ours, t: &Outcome) -> Option<&'static str> {
    let ours = &o.outcome;
    if ours.messages == t.messages {
        if t.end == End::Eof
            && matches!(ours.end, End::Protocol | End::TooBig)
            && o.failed_on_unfinished_frame
        {
            return Some("refused from the first bytes");
        }
        if ours.end == End::Protocol && t.end == End::Utf8 && o.failed_on_close {
            return Some("close reason not UTF-8");
        }
        if ours.end == End::Protocol && t.end == End::TooBig && o.failed_on_huge_frame {
            return Some("a frame over tungstenite's frame limit");
        }
    }
    if ours.end == End::Closed
        && t.end == End::Protocol
        && ours.messages.last() == Some(&Msg::Close(Some(1014)))
        && ours.messages[..ours.messages.len() - 1] == t.messages[..]
    {
        return Some("close code 1014");
    }
    let control = |m: &Msg| matches!(m, Msg::Ping(_) | Msg::Pong | Msg::Close(_));
    if t.end == End::Utf8
        && ours.messages.starts_with(&t.messages)
        && ours.messages[t.messages.len()..].iter().all(control)
        && (o.text_open_at_end || ours.end == End::Utf8)
    {
        return Some("UTF-8 per fragment");
    }
    None
}

/// A sequence of client frames, mostly well-formed, some breaking one rule.
fn frames(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..8) {
        let opcode = match rng.gen_range(0..100) {
            0..=29 => 0x1,
            30..=39 => 0x2,
            40..=59 => 0x0,
            60..=71 => 0x9,
            72..=79 => 0xA,
            80..=93 => 0x8,
            _ => rng.gen_range(0..16),
        };
        let fin = rng.gen_bool(0.7);
        let payload = payload(rng, opcode);
        let mask: [u8; 4] = rng.gen();
        let mut frame = pgchat_ws::masked_frame(opcode, fin, &payload, mask);
        if rng.gen_bool(0.03) {
            frame[0] |= 0x10 << rng.gen_range(0..3); // a reserved bit
        }
        if rng.gen_bool(0.03) {
            // Unmasked: clear the bit, drop the key, unmask the payload.
            frame[1] &= 0x7F;
            let key_at = Header::parse(&frame).unwrap().len;
            frame.drain(key_at..key_at + 4);
            let start = frame.len() - payload.len();
            frame[start..].copy_from_slice(&payload);
        }
        out.extend(frame);
    }
    out
}

fn payload(rng: &mut StdRng, opcode: u8) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0..=79 => rng.gen_range(0..40),
        80..=94 => rng.gen_range(100..140),
        95..=98 => rng.gen_range(200..2000),
        _ if rng.gen_bool(0.3) => rng.gen_range(65_000..70_000),
        _ => rng.gen_range(2000..5000),
    };
    if opcode == 0x8 && rng.gen_bool(0.8) {
        let code: u16 = match rng.gen_range(0..4) {
            0 => rng.gen_range(995..1020),
            1 => rng.gen_range(2990..5010),
            2 => 1000,
            _ => rng.gen(),
        };
        let mut p = code.to_be_bytes().to_vec();
        p.extend(text(rng, len.min(130)));
        return p;
    }
    match rng.gen_range(0..10) {
        0..=6 => text(rng, len),
        _ => {
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes[..]);
            bytes
        }
    }
}

/// Mostly valid UTF-8 (ASCII, 2-, 3- and 4-byte characters), sometimes not.
fn text(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let unit = ["a", "é", "€", "𝄞", "{\"a\":1}"][rng.gen_range(0..5)];
    let mut bytes = unit.repeat(len / unit.len() + 1).into_bytes();
    bytes.truncate(len); // may cut the last character: invalid, or incomplete
    if rng.gen_bool(0.05) && !bytes.is_empty() {
        let at = rng.gen_range(0..bytes.len());
        bytes[at] = rng.gen_range(0x80..=0xFF);
    }
    bytes
}

fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(0..3) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..4) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, rng.gen()),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

/// A header of random bits in each length form, whole or cut short.
fn header_bytes(rng: &mut StdRng) -> Vec<u8> {
    let mut h = vec![rng.gen::<u8>()];
    let masked = if rng.gen_bool(0.8) { 0x80 } else { 0 };
    let extra = match rng.gen_range(0..3) {
        0 => {
            h.push(masked | rng.gen_range(0..126));
            0
        }
        1 => {
            h.push(masked | 126);
            2
        }
        _ => {
            h.push(masked | 127);
            8
        }
    };
    h.extend((0..extra + if masked != 0 { 4 } else { 0 }).map(|_| rng.gen::<u8>()));
    let cut = rng.gen_range(0..=h.len() + 2);
    h.resize(cut, rng.gen());
    h
}

#[test]
fn headers_read_the_same() {
    let mut rng = StdRng::seed_from_u64(0x6455);
    let mut complete = 0;
    for i in 0..100_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..rng.gen_range(0..16)).map(|_| rng.gen()).collect()
        } else {
            let h = header_bytes(&mut rng);
            mutate(&mut rng, h)
        };
        let mine = Header::parse(&bytes);
        let mut cursor = Cursor::new(&bytes);
        match FrameHeader::parse(&mut cursor) {
            Ok(None) => assert_eq!(mine, None, "{bytes:?}"),
            Ok(Some((h, len))) => {
                let m = mine.unwrap_or_else(|| panic!("tungstenite read {bytes:?}"));
                let rsv = u8::from(h.rsv1) << 6 | u8::from(h.rsv2) << 5 | u8::from(h.rsv3) << 4;
                assert_eq!(
                    (m.fin, m.rsv, m.opcode, m.mask, m.payload_len, m.len),
                    (
                        h.is_final,
                        rsv,
                        u8::from(h.opcode),
                        h.mask,
                        len,
                        cursor.position() as usize
                    ),
                    "{bytes:?}"
                );
                complete += 1;
            }
            // tungstenite refuses reserved opcodes while parsing; here that is a rule
            // the decoder applies, and the header itself still reads.
            Err(Error::Protocol(ProtocolError::InvalidOpcode(op))) => {
                let m = mine.unwrap_or_else(|| panic!("no header in {bytes:?}"));
                assert_eq!(m.opcode, op);
                assert!(matches!(op, 0x3..=0x7 | 0xB..=0xF));
            }
            Err(e) => panic!("{e} on {bytes:?}"),
        }
    }
    assert!(complete > 15_000, "only {complete} complete headers");
}

#[test]
fn messages_and_failures_agree_on_random_and_mutated_streams() {
    let mut rng = StdRng::seed_from_u64(0x7077);
    let mut agreed = 0;
    let mut explained_by: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut ends: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..20_000 {
        let input = match i % 4 {
            0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
            1 => frames(&mut rng),
            _ => {
                let f = frames(&mut rng);
                mutate(&mut rng, f)
            }
        };
        let max = [10, 100, 125, 1000, 1 << 20][rng.gen_range(0..5)];
        let o = ours(&input, max);
        let t = theirs(&input, max);
        *ends.entry(format!("{:?}", o.outcome.end)).or_default() += 1;
        if o.outcome.messages == t.messages && o.outcome.end == t.end {
            agreed += 1;
            continue;
        }
        match explained(&o, &t) {
            Some(why) => *explained_by.entry(why).or_default() += 1,
            None => panic!(
                "max {max}, input {input:?}\nours:   {:?}\ntheirs: {t:?}",
                o.outcome
            ),
        }
    }
    eprintln!("agreed {agreed}; explained {explained_by:?}; our ends {ends:?}");
    // The comparison means something only if it saw every kind of ending.
    assert!(agreed > 16_000, "agreed only {agreed}");
    for end in ["Eof", "Closed", "Protocol", "TooBig", "Utf8"] {
        assert!(ends.get(end).copied().unwrap_or(0) > 100, "{end}: {ends:?}");
    }
}
