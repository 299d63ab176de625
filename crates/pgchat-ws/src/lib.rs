//! pgchat's WebSocket frame codec (RFC 6455 §5): the pure half of reading and writing
//! frames, with no I/O. The daemon reads client frames with it and writes its own; the
//! bench reads the server's frames and writes masked client frames with the same code,
//! so one parser is tested, fuzzed and compared against tungstenite's.
//!
//! - [`header`]  a frame header as it is on the wire; masking
//! - [`Decoder`] frames → messages: every rule a receiver checks (masking by role,
//!   reserved bits and opcodes, control frames, fragmentation, the message budget,
//!   close payloads, UTF-8)
//! - [`close`]   which close codes may be sent, and what a Close payload must hold
//! - [`encode`]  frame headers and masked frames to write; what an abandoned write owes

pub mod close;
mod decoder;
pub mod encode;
pub mod header;

pub use close::may_be_sent;
pub use decoder::{Decoder, FrameError, Incoming, Role};
pub use encode::{header, masked_frame, unfinished_frame};
pub use header::{apply_mask, Header};

/// Opcode of a continuation frame (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;

/// The most payload a control frame may carry (RFC 6455 §5.5). Control frames have
/// this limit of their own and never count against a message's size limit.
pub const MAX_CONTROL_PAYLOAD: u64 = 125;
