//! A frame header as it is on the wire (RFC 6455 §5.2), read before any rule is
//! checked: the rules depend on who reads ([`crate::Decoder`]).

/// A complete frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1, RSV2 and RSV3 as they sit in the first byte (0x40, 0x20, 0x10).
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes of the header itself: 2 to 14.
    pub len: usize,
}

impl Header {
    /// The header at the start of `buf`, once all of its bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let (payload_len, through_len) = payload_len(buf)?;
        let masked = buf[1] & 0x80 != 0;
        let len = through_len + if masked { 4 } else { 0 };
        if buf.len() < len {
            return None;
        }
        let mask = masked.then(|| {
            let mut m = [0u8; 4];
            m.copy_from_slice(&buf[through_len..len]);
            m
        });
        Some(Header {
            fin: buf[0] & 0x80 != 0,
            rsv: buf[0] & 0x70,
            opcode: buf[0] & 0x0F,
            mask,
            payload_len,
            len,
        })
    }

    /// Header and payload bytes together; `None` if that does not fit in memory.
    pub fn frame_len(&self) -> Option<usize> {
        usize::try_from(self.payload_len)
            .ok()?
            .checked_add(self.len)
    }

    /// Close, ping, pong and the reserved opcodes 0xB–0xF (RFC 6455 §5.5).
    pub fn is_control(&self) -> bool {
        is_control(self.opcode)
    }
}

pub(crate) fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

/// The payload length of the frame at the start of `buf` and the bytes up to the end of
/// the length field, once those are there: enough to refuse a frame before its mask and
/// payload arrive.
pub fn payload_len(buf: &[u8]) -> Option<(u64, usize)> {
    if buf.len() < 2 {
        return None;
    }
    match buf[1] & 0x7F {
        126 => {
            let b = buf.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([b[0], b[1]])), 4))
        }
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(buf.get(2..10)?);
            Some((u64::from_be_bytes(n), 10))
        }
        n => Some((u64::from(n), 2)),
    }
}

/// Masks or unmasks `payload` in place (RFC 6455 §5.3): the same XOR both ways.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_length_form_and_the_mask_are_read() {
        assert_eq!(Header::parse(&[0x81]), None);
        let h = Header::parse(&[0x81, 5]).unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, h.len),
            (true, 1, None, 5, 2)
        );
        assert_eq!(Header::parse(&[0x01, 126, 1]), None);
        let h = Header::parse(&[0x01, 126, 1, 0]).unwrap();
        assert_eq!((h.fin, h.payload_len, h.len), (false, 256, 4));
        let mut long = vec![0xF2, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        let h = Header::parse(&long).unwrap();
        assert_eq!(
            (h.rsv, h.opcode, h.payload_len, h.len),
            (0x70, 2, 70_000, 10)
        );
        assert_eq!(h.frame_len(), Some(70_010));
        let masked = [0x89, 0x82, 1, 2, 3];
        assert_eq!(Header::parse(&masked), None, "mask incomplete");
        assert_eq!(
            payload_len(&masked),
            Some((2, 2)),
            "the length is known already"
        );
        let h = Header::parse(&[0x89, 0x82, 1, 2, 3, 4]).unwrap();
        assert_eq!(
            (h.mask, h.len, h.is_control()),
            (Some([1, 2, 3, 4]), 6, true)
        );
        let huge = [0x82, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(Header::parse(&huge).unwrap().frame_len(), None);
    }

    #[test]
    fn masking_twice_gives_the_payload_back() {
        let mut p = b"hello, world".to_vec();
        apply_mask(&mut p, [9, 8, 7, 6]);
        assert_ne!(p, b"hello, world");
        assert_eq!(p[0], b'h' ^ 9);
        assert_eq!(p[5], b',' ^ 8);
        apply_mask(&mut p, [9, 8, 7, 6]);
        assert_eq!(p, b"hello, world");
    }
}
