//! RFC 6455's edge cases for a reader, on the codec alone: close-frame payloads,
//! control frames inside a fragmented message, a ping beside a message at the size
//! limit, masking by role, and delivery in any split.

use pgchat_ws::{masked_frame, Decoder, FrameError, Incoming, Role};
use pgchat_ws::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};

const MASK: [u8; 4] = [0xA1, 0x0B, 0x3C, 0xD4];

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(opcode, fin, payload, MASK)
}

/// Everything `bytes` decodes to, as a server reading a client, until the first error
/// or the end of the complete frames.
fn decode_all(max: usize, bytes: &[u8]) -> Vec<Result<Incoming, FrameError>> {
    decode_with(Decoder::new(Role::Server, max), bytes)
}

fn decode_with(mut decoder: Decoder, bytes: &[u8]) -> Vec<Result<Incoming, FrameError>> {
    let mut buf = bytes.to_vec();
    let mut out = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some((used, finished))) => {
                buf.drain(..used);
                out.extend(finished.map(Ok));
            }
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

fn protocol_error(got: &[Result<Incoming, FrameError>]) -> bool {
    matches!(got.last(), Some(Err(FrameError::Protocol(_))))
}

#[test]
fn close_payloads_empty_one_byte_bad_code_bad_reason() {
    let close = |payload: &[u8]| decode_all(100, &frame(true, CLOSE, payload));
    assert_eq!(close(b""), vec![Ok(Incoming::Close(None))]);
    assert_eq!(
        close(&close_payload(1000, b"bye")),
        vec![Ok(Incoming::Close(Some(1000)))]
    );
    // The longest reason a control frame holds: 2 + 123 = 125 bytes.
    let longest = close_payload(4000, &[b'r'; 123]);
    assert_eq!(close(&longest), vec![Ok(Incoming::Close(Some(4000)))]);
    // 1 byte: 1002.
    let one = close(&[0x03]);
    assert_eq!(
        one,
        vec![Err(FrameError::Protocol("a close payload of one byte"))]
    );
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let got = close(&close_payload(code, b""));
        assert!(
            matches!(&got[..], [Err(FrameError::Protocol(why))] if why.contains("may not be sent")),
            "{code}: {got:?}"
        );
    }
    // A reason that is not UTF-8 fails the connection with 1002, not 1007 (§5.5.1).
    for reason in [&[0xC3][..], &[b'o', 0xFF], &[0xED, 0xA0, 0x80]] {
        let got = close(&close_payload(1000, reason));
        assert!(
            matches!(&got[..], [Err(FrameError::Protocol(why))] if why.contains("UTF-8")),
            "{reason:?}: {got:?}"
        );
    }
    // 126 bytes is no longer a control frame's size, even for a valid code.
    assert!(protocol_error(&close(&close_payload(1000, &[b'r'; 124]))));
}

#[test]
fn control_frames_inside_a_fragmented_message() {
    let mut bytes = frame(false, TEXT, b"he");
    bytes.extend(frame(true, PING, b"p1"));
    bytes.extend(frame(false, CONTINUATION, b"ll"));
    bytes.extend(frame(true, PONG, b""));
    bytes.extend(frame(true, PING, b""));
    bytes.extend(frame(true, CONTINUATION, b"o"));
    bytes.extend(frame(true, BINARY, b"\x01"));
    assert_eq!(
        decode_all(100, &bytes),
        vec![
            Ok(Incoming::Ping(b"p1".to_vec())),
            Ok(Incoming::Pong),
            Ok(Incoming::Ping(Vec::new())),
            Ok(Incoming::Text("hello".into())),
            Ok(Incoming::Binary),
        ]
    );

    // A Close between fragments is delivered at once; the message never completes.
    let mut closing = frame(false, BINARY, b"ab");
    closing.extend(frame(true, CLOSE, &close_payload(1001, b"")));
    assert_eq!(
        decode_all(100, &closing),
        vec![Ok(Incoming::Close(Some(1001)))]
    );

    // A new data frame before the fragmented message ends: 1002.
    for opcode in [TEXT, BINARY] {
        for fin in [true, false] {
            let mut bytes = frame(false, TEXT, b"a");
            bytes.extend(frame(fin, opcode, b"b"));
            let got = decode_all(100, &bytes);
            assert!(protocol_error(&got), "{opcode} {fin}: {got:?}");
        }
    }
    // A continuation with no message, even right after one completed: 1002.
    assert!(protocol_error(&decode_all(
        100,
        &frame(true, CONTINUATION, b"a")
    )));
    let mut after = frame(true, TEXT, b"done");
    after.extend(frame(false, CONTINUATION, b"a"));
    let got = decode_all(100, &after);
    assert_eq!(got[0], Ok(Incoming::Text("done".into())));
    assert!(protocol_error(&got));
    // Control frames are never fragmented.
    for opcode in [PING, PONG, CLOSE] {
        assert!(protocol_error(&decode_all(100, &frame(false, opcode, b""))));
    }
}

#[test]
fn a_ping_beside_a_message_at_the_size_limit_does_not_count_against_it() {
    // 95 of 100 bytes buffered, then a ping of the largest size: it is answered, and
    // the message still completes at exactly the limit.
    let mut bytes = frame(false, TEXT, &[b'a'; 95]);
    bytes.extend(frame(true, PING, &[b'p'; 125]));
    bytes.extend(frame(true, PONG, &[b'q'; 125]));
    bytes.extend(frame(true, CONTINUATION, &[b'a'; 5]));
    assert_eq!(
        decode_all(100, &bytes),
        vec![
            Ok(Incoming::Ping(vec![b'p'; 125])),
            Ok(Incoming::Pong),
            Ok(Incoming::Text("a".repeat(100))),
        ]
    );
    // A limit below a control frame's own: control frames still pass, data does not.
    let mut small = frame(true, PING, &[b'p'; 125]);
    small.extend(frame(true, CLOSE, &close_payload(1000, &[b'r'; 100])));
    assert_eq!(
        decode_all(10, &small),
        vec![
            Ok(Incoming::Ping(vec![b'p'; 125])),
            Ok(Incoming::Close(Some(1000)))
        ]
    );
    assert_eq!(
        decode_all(10, &frame(true, TEXT, &[b'a'; 11])),
        vec![Err(FrameError::TooBig(10))]
    );
    // One byte past the limit, over fragments with a ping between: 1009.
    let mut over = frame(false, TEXT, &[b'a'; 95]);
    over.extend(frame(true, PING, b"p"));
    over.extend(frame(true, CONTINUATION, &[b'a'; 6]));
    assert_eq!(
        decode_all(100, &over),
        vec![
            Ok(Incoming::Ping(b"p".to_vec())),
            Err(FrameError::TooBig(100))
        ]
    );
    // A control frame over 125 bytes is a protocol error, whatever the message limit.
    let big_ping = frame(true, PING, &[b'p'; 126]);
    assert!(protocol_error(&decode_all(1 << 20, &big_ping)));
}

#[test]
fn an_oversized_frame_is_refused_from_its_length_alone() {
    // 16-bit and 64-bit length forms, with no mask or payload behind them.
    let mut short = vec![0x81, 0xFE];
    short.extend_from_slice(&1000u16.to_be_bytes());
    assert_eq!(decode_all(999, &short), vec![Err(FrameError::TooBig(999))]);
    let mut huge = vec![0x82, 0xFF];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(decode_all(999, &huge), vec![Err(FrameError::TooBig(999))]);
    // Within the limit, the same header waits for the rest.
    assert_eq!(decode_all(1000, &short), vec![]);
    // With no limit at all, a length that fits in no memory is still too big (found by
    // the fuzzer: the header's and the payload's lengths overflowed when added).
    let mut endless = vec![0x82, 0xFF];
    endless.extend_from_slice(&u64::MAX.to_be_bytes());
    endless.extend_from_slice(&MASK);
    let got = decode_with(Decoder::new(Role::Server, usize::MAX), &endless);
    assert_eq!(got, vec![Err(FrameError::TooBig(usize::MAX))]);
}

#[test]
fn reserved_bits_and_opcodes_fail_from_the_first_bytes() {
    for rsv in [0x40, 0x20, 0x10] {
        let mut f = frame(true, TEXT, b"a");
        f[0] |= rsv;
        assert!(protocol_error(&decode_all(100, &f[..2])), "{rsv:#x}");
    }
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        let f = frame(true, opcode, b"a");
        assert!(protocol_error(&decode_all(100, &f[..2])), "{opcode:#x}");
    }
}

#[test]
fn masking_follows_the_role() {
    let (h, n) = pgchat_ws::header(TEXT, 1);
    let unmasked = [&h[..n], b"a"].concat();
    let server = decode_with(Decoder::new(Role::Server, 100), &unmasked);
    assert!(protocol_error(&server), "{server:?}");
    let client = decode_with(Decoder::new(Role::Client, 100), &unmasked);
    assert_eq!(client, vec![Ok(Incoming::Text("a".into()))]);
    let masked = decode_with(Decoder::new(Role::Client, 100), &frame(true, TEXT, b"a"));
    assert!(
        protocol_error(&masked),
        "a client refuses masked frames: {masked:?}"
    );
}

#[test]
fn text_is_checked_as_a_whole_message() {
    // "é" split between two fragments is valid once whole.
    let e = "é".as_bytes();
    let mut split = frame(false, TEXT, &e[..1]);
    split.extend(frame(true, CONTINUATION, &e[1..]));
    assert_eq!(
        decode_all(100, &split),
        vec![Ok(Incoming::Text("é".into()))]
    );
    // Invalid in one frame, or across fragments: 1007.
    let bad = decode_all(100, &frame(true, TEXT, &[0xFF, 0xFE]));
    assert_eq!(bad, vec![Err(FrameError::InvalidUtf8)]);
    let mut cut = frame(false, TEXT, &e[..1]);
    cut.extend(frame(true, CONTINUATION, b"x"));
    assert_eq!(decode_all(100, &cut), vec![Err(FrameError::InvalidUtf8)]);
    // Binary payloads are not text.
    assert_eq!(
        decode_all(100, &frame(true, BINARY, &[0xFF])),
        vec![Ok(Incoming::Binary)]
    );
    assert_eq!(
        decode_all(100, &frame(true, TEXT, b"")),
        vec![Ok(Incoming::Text(String::new()))]
    );
}

#[test]
fn any_split_of_the_bytes_decodes_the_same() {
    let mut bytes = frame(false, TEXT, "x".repeat(200).as_bytes());
    bytes.extend(frame(true, PING, b"mid"));
    bytes.extend(frame(true, CONTINUATION, "é".repeat(40_000).as_bytes()));
    bytes.extend(frame(true, CLOSE, &close_payload(1000, b"")));
    let whole = decode_all(200_000, &bytes);
    assert_eq!(whole.len(), 3);
    for step in [1, 2, 3, 7, 64, 1000] {
        let mut decoder = Decoder::new(Role::Server, 200_000);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some((used, finished)) = decoder.decode(&mut buf).unwrap() {
                buf.drain(..used);
                got.extend(finished.map(Ok));
            }
        }
        assert!(buf.is_empty(), "step {step}");
        assert_eq!(got, whole, "step {step}");
    }
}
