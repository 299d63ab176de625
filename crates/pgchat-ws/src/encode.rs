//! Frames to write: a server's unmasked headers (the payload follows as it is, so a
//! writer can send both in one `writev` without copying), a client's masked frames, and
//! what a write abandoned halfway still owes the peer.

/// An unmasked, final frame header for a payload of `len` bytes: (bytes, used length).
/// The shortest length form is used, as RFC 6455 §5.2 requires.
pub fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// A client-to-server frame, masked with `mask` as RFC 6455 §5.3 requires of clients.
/// The server never sends these; the bench and the tests do.
pub fn masked_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let (h, used) = header(opcode, payload.len());
    let mut frame = Vec::with_capacity(used + 4 + payload.len());
    frame.extend_from_slice(&h[..used]);
    if !fin {
        frame[0] &= 0x7F;
    }
    frame[1] |= 0x80;
    frame.extend_from_slice(&mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    crate::apply_mask(&mut frame[start..], mask);
    frame
}

/// The bytes still missing from the frame that was being written when the final frames
/// of `opcode` carrying `payloads`, in order, stopped after `written` bytes; `None` if
/// it stopped between frames. Only these may follow on the wire: anything else would
/// be read as that frame's rest.
pub fn unfinished_frame<P: AsRef<[u8]>>(
    opcode: u8,
    payloads: &[P],
    written: usize,
) -> Option<Box<[u8]>> {
    let mut start = 0;
    for payload in payloads {
        let payload = payload.as_ref();
        let (h, used) = header(opcode, payload.len());
        let end = start + used + payload.len();
        if written < end {
            if written == start {
                return None;
            }
            let into = written - start;
            let mut tail = Vec::with_capacity(end - written);
            if into < used {
                tail.extend_from_slice(&h[into..used]);
                tail.extend_from_slice(payload);
            } else {
                tail.extend_from_slice(&payload[into - used..]);
            }
            return Some(tail.into_boxed_slice());
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Header, PING, TEXT};

    #[test]
    fn headers_use_the_shortest_length_form() {
        let (h, n) = header(TEXT, 5);
        assert_eq!(&h[..n], &[0x81, 5]);
        let (h, n) = header(TEXT, 125);
        assert_eq!(&h[..n], &[0x81, 125]);
        let (h, n) = header(TEXT, 126);
        assert_eq!(&h[..n], &[0x81, 126, 0, 126]);
        let (h, n) = header(TEXT, 300);
        assert_eq!(&h[..n], &[0x81, 126, 1, 44]);
        let (h, n) = header(TEXT, 65_535);
        assert_eq!(&h[..n], &[0x81, 126, 0xFF, 0xFF]);
        let (h, n) = header(TEXT, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let (h, n) = header(PING, 0);
        assert_eq!(&h[..n], &[0x89, 0]);
    }

    #[test]
    fn a_masked_frame_reads_back() {
        let frame = masked_frame(TEXT, false, b"abcde", [1, 2, 3, 4]);
        let h = Header::parse(&frame).unwrap();
        assert_eq!((h.fin, h.opcode, h.mask), (false, TEXT, Some([1, 2, 3, 4])));
        assert_eq!((h.len, h.payload_len), (6, 5));
        let mut payload = frame[6..].to_vec();
        crate::apply_mask(&mut payload, [1, 2, 3, 4]);
        assert_eq!(payload, b"abcde");
    }

    #[test]
    fn an_abandoned_write_leaves_exactly_the_rest_of_its_frame() {
        let big = "z".repeat(300);
        let payloads = ["ab", big.as_str(), "", "end"];
        let mut wire = Vec::new();
        let mut boundaries = vec![0];
        for p in payloads {
            let (h, n) = header(TEXT, p.len());
            wire.extend_from_slice(&h[..n]);
            wire.extend_from_slice(p.as_bytes());
            boundaries.push(wire.len());
        }
        for written in 0..=wire.len() {
            let tail = unfinished_frame(TEXT, &payloads, written);
            if boundaries.contains(&written) {
                assert_eq!(tail, None, "at {written}");
                continue;
            }
            let end = *boundaries.iter().find(|b| **b > written).unwrap();
            assert_eq!(tail.as_deref(), Some(&wire[written..end]), "at {written}");
        }
    }
}
