//! Frames → messages, with every rule a receiver checks (RFC 6455 §5). The caller owns
//! the bytes: [`Decoder::decode`] looks at the front of a buffer, unmasks a complete
//! frame in place and says how many bytes it took, so the daemon can keep nothing
//! while idle and the bench can read into one reused buffer.

use crate::header::{is_control, payload_len};
use crate::{close, Header, MAX_CONTROL_PAYLOAD};

/// Which end reads, and so which frames it accepts (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads a client's frames: every one must be masked.
    Server,
    /// Reads a server's frames: none may be masked.
    Client,
}

/// One complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The peer's close code, if it sent one.
    Close(Option<u16>),
}

/// Why the connection must fail. Each variant names its close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
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

pub struct Decoder {
    role: Role,
    /// The most bytes one data message may carry, all its fragments together.
    max_message: usize,
    /// A fragmented message being reassembled: (is text, payload so far).
    message: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    pub fn new(role: Role, max_message: usize) -> Self {
        Self {
            role,
            max_message,
            message: None,
        }
    }

    /// Takes the frame at the front of `buf` once it is complete, unmasking its payload
    /// in place: the bytes it took, and the message or control frame it finished (a
    /// fragment finishes none). `None` until the frame is complete; a frame that breaks
    /// a rule is refused as soon as its first bytes show it, so an oversized frame is
    /// never waited for.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(usize, Option<Incoming>)>, FrameError> {
        if !self.check_start(buf)? {
            return Ok(None);
        }
        let Some(h) = Header::parse(buf) else {
            return Ok(None);
        };
        // Past a limit of usize::MAX only a length that fits in no memory is left.
        let Some(end) = h.frame_len() else {
            return Err(FrameError::TooBig(self.max_message));
        };
        if buf.len() < end {
            return Ok(None);
        }
        let payload = &mut buf[h.len..end];
        if let Some(mask) = h.mask {
            crate::apply_mask(payload, mask);
        }
        Ok(Some((end, self.on_frame(h.fin, h.opcode, payload)?)))
    }

    /// The rules the first bytes decide; `false` while the length is not there yet.
    fn check_start(&self, buf: &[u8]) -> Result<bool, FrameError> {
        let [first, second, ..] = *buf else {
            return Ok(false);
        };
        if first & 0x70 != 0 {
            return Err(FrameError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        let masked = second & 0x80 != 0;
        match self.role {
            Role::Server if !masked => {
                return Err(FrameError::Protocol("client frames must be masked"))
            }
            Role::Client if masked => {
                return Err(FrameError::Protocol("server frames must not be masked"))
            }
            _ => {}
        }
        let opcode = first & 0x0F;
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
            return Err(FrameError::Protocol("unknown opcode"));
        }
        let Some((len, _)) = payload_len(buf) else {
            return Ok(false);
        };
        if is_control(opcode) {
            // Their own limit; they never count against the message budget.
            let fin = first & 0x80 != 0;
            if !fin || len > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::Protocol(
                    "control frames are short and unfragmented",
                ));
            }
            return Ok(true);
        }
        // The frame's place in the message sequence before its size: a frame that is
        // both out of place and too big is a protocol error (1002).
        let so_far = match (&self.message, opcode) {
            (None, crate::CONTINUATION) => {
                return Err(FrameError::Protocol("continuation without a message"))
            }
            (Some(_), crate::TEXT | crate::BINARY) => {
                return Err(FrameError::Protocol(
                    "new message before the last one ended",
                ))
            }
            (Some((_, m)), _) => m.len() as u64,
            (None, _) => 0,
        };
        if len.saturating_add(so_far) > self.max_message as u64 {
            return Err(FrameError::TooBig(self.max_message));
        }
        Ok(true)
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
    ) -> Result<Option<Incoming>, FrameError> {
        match opcode {
            crate::TEXT | crate::BINARY => {
                let is_text = opcode == crate::TEXT;
                if !fin {
                    self.message = Some((is_text, payload.to_vec()));
                    return Ok(None);
                }
                if !is_text {
                    return Ok(Some(Incoming::Binary));
                }
                let text = std::str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?;
                Ok(Some(Incoming::Text(text.to_owned())))
            }
            crate::CONTINUATION => {
                // Checked with the header: a continuation follows a message's start.
                let Some((is_text, mut so_far)) = self.message.take() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                so_far.extend_from_slice(payload);
                if !fin {
                    self.message = Some((is_text, so_far));
                    return Ok(None);
                }
                if !is_text {
                    return Ok(Some(Incoming::Binary));
                }
                String::from_utf8(so_far)
                    .map(|text| Some(Incoming::Text(text)))
                    .map_err(|_| FrameError::InvalidUtf8)
            }
            crate::CLOSE => close::close_code(payload).map(|code| Some(Incoming::Close(code))),
            crate::PING => Ok(Some(Incoming::Ping(payload.to_vec()))),
            crate::PONG => Ok(Some(Incoming::Pong)),
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }
}
