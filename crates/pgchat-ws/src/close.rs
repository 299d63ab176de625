//! Close frames (RFC 6455 §5.5.1, §7.4): which codes may be on the wire, and what a
//! received Close payload must hold.

use crate::FrameError;

/// Whether `code` may appear in a Close frame on the wire (RFC 6455 §7.4): not
/// below 1000, not 1004–1006 or 1015 (reserved, or only for an endpoint's own
/// reports), not 1016–2999 (unassigned), not 5000 or more.
pub fn may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code of a received Close frame: none for an empty payload; otherwise a code
/// that may be sent on the wire, then a UTF-8 reason. Each failure closes with 1002.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("a close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !may_be_sent(code) {
                return Err(FrameError::Protocol("a close code that may not be sent"));
            }
            std::str::from_utf8(reason)
                .map_err(|_| FrameError::Protocol("a close reason that is not UTF-8"))?;
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_that_may_be_sent() {
        let allowed: Vec<u16> = (0..=u16::MAX).filter(|c| may_be_sent(*c)).collect();
        assert_eq!(allowed.len(), 4 + 8 + 2000);
        for code in [1000, 1003, 1007, 1014, 3000, 4999] {
            assert!(may_be_sent(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!may_be_sent(code), "{code}");
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(close_code(b""), Ok(None));
        assert_eq!(close_code(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_code(&[0x0F, 0xA0, b'o', b'k']), Ok(Some(4000)));
        assert!(matches!(close_code(&[0x03]), Err(FrameError::Protocol(_))));
        assert!(matches!(
            close_code(&[0x03, 0xED]),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            close_code(&[0x03, 0xE8, 0xC3]),
            Err(FrameError::Protocol(_))
        ));
    }
}
