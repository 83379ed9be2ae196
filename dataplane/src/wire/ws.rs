//! WebSocket framing (RFC 6455 §5): an incremental frame decoder and frame encoders, both roles.
//!
//! What it does: turns a byte stream into [`Event`]s and frames into bytes. It enforces the
//! framing rules of RFC 6455 for a connection that negotiated no extension: masking by role,
//! reserved bits, opcodes, fragmentation, control-frame size, length encoding, close payloads,
//! and a per-message size limit. Every violation is a [`WsError`] whose
//! [`close_code`](WsError::close_code) is the status to put in the Close frame the caller sends
//! before it drops the connection.
//!
//! What it does not do: no I/O, no clock, no randomness (mask keys are the caller's), no
//! ping/pong/close policy (answering pings, the closing handshake and timeouts are the caller's),
//! no extensions (permessage-deflate is never negotiated). Text and binary messages are both
//! byte streams here: text payload is not checked for UTF-8, because a tunnel forwards bytes
//! and a text message may split a character across frames; only a close reason is checked
//! (1007).
//!
//! # Decoding
//!
//! [`Decoder::decode`]`(input, payload)` reads from `input` until it has one [`Event`] or has
//! used all of `input`, and returns `(consumed, event)`:
//!
//! - `Ok((n, None))`: `n == input.len()`. Everything was absorbed: a partial header (at most
//!   14 bytes) or a partial control payload (at most 125 bytes) is kept inside the decoder, so
//!   the caller may reuse its whole receive buffer. Read more and call again.
//! - `Ok((n, Some(event)))`: `input[..n]` was used, `input[n..]` has not been looked at; call
//!   again with it (a single read routinely holds several frames).
//! - `Err(e)`: the peer broke the protocol. The decoder stays failed and returns `e` again on
//!   every later call; send a Close with `e.close_code()` and stop reading.
//!
//! Data frames never pass through an internal buffer, and their payload is reported in chunks:
//! a chunk is the part of one frame's payload present in this `input`, reported as
//! [`Event::Data`] with its length, so a message of any size streams through without being
//! buffered whole and without per-frame allocation. Two ways to receive the chunk:
//!
//! - [`Decoder::decode`] unmasks it straight from `input` onto the end of the caller's
//!   `payload` vector (one copy, fused with the unmask). A relay passes its outbound buffer as
//!   `payload`, decodes every frame of a read into it and writes it with one call.
//! - [`Decoder::decode_in_place`] takes `input` mutably, unmasks the chunk where it lies and
//!   copies nothing: the chunk is `input[n - len..n]`. A relay writes the chunks of one read
//!   straight from its receive buffer (vectored write), which is zero-copy in userspace for
//!   either role.
//!
//! The two may be mixed on one decoder (the choice is per call).
//!
//! Control frames (Ping, Pong, Close) may arrive between the fragments of a message; their
//! payload is collected inside the decoder and returned whole, once per frame. After a Close
//! event the decoder accepts no more frames ([`WsError::FrameAfterClose`]).
//!
//! Decoder states:
//!
//! | state | left on | to |
//! |---|---|---|
//! | header (0–13 bytes buffered) | header complete | payload |
//! | header | a rule broken by a visible header byte | failed |
//! | payload (data) | chunk copied (event `Data`); frame complete | header |
//! | payload (control) | frame complete: event `Ping` / `Pong` | header |
//! | payload (control) | frame complete: event `Close` | closed |
//! | payload (control) | bad close payload | failed |
//! | closed | any further byte | failed |
//! | failed | (terminal) | — |
//!
//! # Encoding
//!
//! [`encode_frame`] appends header and payload (masked with the caller's key when given). A
//! relay that must not copy the payload asks [`encode_header`] for the header alone and writes
//! header and payload with one vectored write (unmasked, i.e. server-to-client); a client must
//! mask, so it copies anyway ([`apply_mask`] works in place, from any offset in the payload).

/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Close status codes (RFC 6455 §7.4.1 and the IANA registry) a gateway sends.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_GATEWAY: u16 = 1014;
}

/// Whether a peer may send `code` in a Close frame: 1000–1003, 1007–1014 (RFC 6455 and the
/// IANA registry) or 3000–4999 (libraries and applications). 1004–1006 and 1015 are reserved
/// or "must not be sent"; the rest of 1000–2999 is reserved for future RFCs.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Which end of the connection this is. A server receives masked frames and sends unmasked
/// ones; a client receives unmasked frames and sends masked ones (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// A frame opcode (RFC 6455 §5.2). Variants are alphabetical; see [`OpCode::to_byte`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x2.
    Binary,
    /// 0x8.
    Close,
    /// 0x0.
    Continuation,
    /// 0x9.
    Ping,
    /// 0xA.
    Pong,
    /// 0x1.
    Text,
}

impl OpCode {
    /// The 4-bit opcode on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Continuation => 0x0,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Text => 0x1,
        }
    }

    /// The opcode a 4-bit value names; `None` for the reserved values 0x3–0x7 and 0xB–0xF.
    pub fn from_byte(b: u8) -> Option<OpCode> {
        match b {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The kind of a data message, from its first frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Binary,
    Text,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A Close frame. `code` is `None` for an empty payload; a present code is valid
    /// ([`is_valid_close_code`]) and `reason` is valid UTF-8 (possibly empty).
    Close { code: Option<u16>, reason: String },
    /// `len` bytes of message payload (possibly 0, for an empty frame), unmasked: appended to
    /// the caller's `payload` vector ([`Decoder::decode`]) or the last `len` bytes consumed
    /// ([`Decoder::decode_in_place`]). `fin` is true on the chunk that ends the message.
    Data {
        kind: MessageKind,
        len: usize,
        fin: bool,
    },
    /// A Ping frame with its payload (at most 125 bytes); answer with a Pong carrying it.
    Ping(Vec<u8>),
    /// A Pong frame with its payload (at most 125 bytes).
    Pong(Vec<u8>),
}

/// Why the peer's bytes were rejected. Every variant fails the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A Close frame carried a status code peers may not send.
    #[error("WebSocket close frame with invalid status code {0}")]
    BadCloseCode(u16),
    /// A Close frame had a 1-byte payload (a status code is 2 bytes).
    #[error("WebSocket close frame with a 1-byte payload")]
    BadClosePayload,
    /// A close reason was not valid UTF-8.
    #[error("WebSocket close reason is not valid UTF-8")]
    BadCloseReason,
    /// A control frame announced more than 125 bytes of payload.
    #[error("WebSocket control frame longer than 125 bytes")]
    ControlTooLong,
    /// A Text or Binary frame arrived while a fragmented message was still open.
    #[error("WebSocket data frame while a fragmented message is open")]
    ExpectedContinuation,
    /// A control frame had FIN clear.
    #[error("fragmented WebSocket control frame")]
    FragmentedControl,
    /// Bytes arrived after the peer's Close frame.
    #[error("WebSocket frame after close")]
    FrameAfterClose,
    /// A 64-bit payload length had its most significant bit set.
    #[error("WebSocket 64-bit payload length with the top bit set")]
    LengthOverflow,
    /// A client received a masked frame.
    #[error("masked WebSocket frame from a server")]
    MaskedFrame,
    /// A message grew beyond the decoder's `max_message`.
    #[error("WebSocket message larger than the limit")]
    MessageTooBig,
    /// RSV1–RSV3 (given as the 3-bit value) were not zero; no extension was negotiated.
    #[error("WebSocket reserved bits {0:#05b} set")]
    ReservedBits(u8),
    /// A Continuation frame arrived with no fragmented message open.
    #[error("WebSocket continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A reserved opcode.
    #[error("unknown WebSocket opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A server received an unmasked frame.
    #[error("unmasked WebSocket frame from a client")]
    UnmaskedFrame,
}

impl WsError {
    /// The status code to send in the Close frame that fails the connection: 1007 for a bad
    /// close reason, 1009 for a message over the limit, 1002 for every other violation.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::BadCloseReason => close_code::INVALID_PAYLOAD,
            WsError::MessageTooBig => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }

    /// Stable snake_case label for metrics (never free text).
    pub fn label(&self) -> &'static str {
        match self {
            WsError::BadCloseCode(_) => "bad_close_code",
            WsError::BadClosePayload => "bad_close_payload",
            WsError::BadCloseReason => "bad_close_reason",
            WsError::ControlTooLong => "control_too_long",
            WsError::ExpectedContinuation => "expected_continuation",
            WsError::FragmentedControl => "fragmented_control",
            WsError::FrameAfterClose => "frame_after_close",
            WsError::LengthOverflow => "length_overflow",
            WsError::MaskedFrame => "masked_frame",
            WsError::MessageTooBig => "message_too_big",
            WsError::ReservedBits(_) => "reserved_bits",
            WsError::UnexpectedContinuation => "unexpected_continuation",
            WsError::UnknownOpcode(_) => "unknown_opcode",
            WsError::UnmaskedFrame => "unmasked_frame",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Masking
// ---------------------------------------------------------------------------------------------

/// XORs `buf` with the mask key `mask` in place, `buf[0]` being byte `offset` of the frame
/// payload (so a payload may be masked piecewise). Applying it twice restores the input.
/// Works 8 bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let k = offset % 4;
    let m = [
        mask[k],
        mask[(k + 1) % 4],
        mask[(k + 2) % 4],
        mask[(k + 3) % 4],
    ];
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // Always 8 bytes (chunks_exact); the conversion cannot fail.
        if let Ok(w) = <&mut [u8; 8]>::try_from(chunk) {
            *w = (u64::from_ne_bytes(*w) ^ word).to_ne_bytes();
        }
    }
    // The remainder starts at a multiple of 8 bytes, so its mask phase is `m[0]`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Appends `src` to `dst`, unmasked with `mask` when present (`src[0]` is payload byte `offset`).
fn append_unmasked(dst: &mut Vec<u8>, src: &[u8], mask: Option<[u8; 4]>, offset: usize) {
    let start = dst.len();
    dst.extend_from_slice(src);
    if let Some(mask) = mask {
        apply_mask(&mut dst[start..], mask, offset);
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Length of a frame header for a payload of `payload_len` bytes: 2, 4 or 10 bytes, plus 4 when
/// `masked`.
pub fn header_len(payload_len: u64, masked: bool) -> usize {
    let ext = match payload_len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 }
}

/// A frame header: returns the buffer and how many of its bytes to send (see [`header_len`]).
/// The payload (masked by the caller with [`apply_mask`] when `mask` is given) follows it.
///
/// `payload_len` must be below 2^63; a larger value is a caller bug (its top bit is dropped in
/// release builds). Lengths use the shortest encoding; control frames must have FIN set and at
/// most 125 bytes, which only the helpers below enforce.
pub fn encode_header(
    opcode: OpCode,
    fin: bool,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> ([u8; MAX_HEADER_LEN], usize) {
    debug_assert!(payload_len < 1 << 63, "WebSocket payload length over 2^63");
    let mut h = [0u8; MAX_HEADER_LEN];
    h[0] = (u8::from(fin) << 7) | opcode.to_byte();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = match payload_len {
        0..=125 => {
            // In range: at most 125.
            h[1] = mask_bit | payload_len as u8;
            2
        }
        126..=0xFFFF => {
            h[1] = mask_bit | 126;
            // In range: at most 0xFFFF.
            h[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            h[1] = mask_bit | 127;
            h[2..10].copy_from_slice(&(payload_len & !(1 << 63)).to_be_bytes());
            10
        }
    };
    if let Some(mask) = mask {
        h[n..n + 4].copy_from_slice(&mask);
        n += 4;
    }
    (h, n)
}

/// Appends one frame: header, then `payload`, masked with `mask` when given (a client must
/// give one, chosen unpredictably per frame; a server must not).
pub fn encode_frame(
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) {
    let (h, n) = encode_header(opcode, fin, payload.len() as u64, mask);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    append_unmasked(out, payload, mask, 0);
}

/// Appends a Close frame. `None` sends an empty payload (and no reason). Otherwise the payload is
/// the code and `reason`, cut at a character boundary to fit in 123 bytes. The code should be
/// one [`is_valid_close_code`] accepts; it is not checked.
pub fn encode_close(code: Option<u16>, reason: &str, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mut buf = [0u8; MAX_CONTROL_PAYLOAD];
    let len = match code {
        None => 0,
        Some(code) => {
            buf[..2].copy_from_slice(&code.to_be_bytes());
            let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            buf[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
            2 + cut
        }
    };
    encode_frame(OpCode::Close, true, &buf[..len], mask, out);
}

/// Appends a Ping frame; a payload over 125 bytes is cut to 125.
pub fn encode_ping(payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode_frame(OpCode::Ping, true, payload, mask, out);
}

/// Appends a Pong frame; a payload over 125 bytes is cut to 125.
pub fn encode_pong(payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode_frame(OpCode::Pong, true, payload, mask, out);
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Closed,
    Header,
    Payload,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes not read yet.
    remaining: u64,
    /// Payload bytes read so far, modulo 4 (the mask phase).
    phase: usize,
    /// For data frames, the message's kind.
    kind: MessageKind,
}

/// Where a data chunk starts in the input of a decoding step, and how to unmask it.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    start: usize,
    mask: Option<[u8; 4]>,
    /// Mask phase of the chunk's first byte.
    phase: usize,
}

/// Incremental frame decoder for one direction of one connection. See the module docs for the
/// calling convention.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    max_message: u64,
    stage: Stage,
    head: [u8; MAX_HEADER_LEN],
    head_len: usize,
    frame: Frame,
    /// The kind of the fragmented message still open (its last frame had FIN clear).
    open: Option<MessageKind>,
    /// Payload bytes announced so far by the frames of the current message.
    message_len: u64,
    /// Payload of the control frame being read.
    control: Vec<u8>,
    failed: Option<WsError>,
}

impl Decoder {
    /// A decoder for the frames `role` receives. A message whose frames together announce more
    /// than `max_message` payload bytes fails with [`WsError::MessageTooBig`] as soon as the
    /// header that crosses the limit is read (before its payload); `usize::MAX` means no limit.
    pub fn new(role: Role, max_message: usize) -> Decoder {
        Decoder {
            role,
            max_message: u64::try_from(max_message).unwrap_or(u64::MAX),
            stage: Stage::Header,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            frame: Frame {
                opcode: OpCode::Binary,
                fin: true,
                mask: None,
                remaining: 0,
                phase: 0,
                kind: MessageKind::Binary,
            },
            open: None,
            message_len: 0,
            control: Vec::new(),
            failed: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether a Close frame has been decoded.
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Closed
    }

    /// Whether the stream may end here cleanly: no frame is partly read and no fragmented
    /// message is open. An EOF elsewhere truncates a frame or a message.
    pub fn at_message_boundary(&self) -> bool {
        self.open.is_none()
            && match self.stage {
                Stage::Closed => true,
                Stage::Header => self.head_len == 0,
                Stage::Payload => false,
            }
    }

    /// Decodes from `input` until one event or the end of `input`; unmasked data payload is
    /// appended to `payload`. See the module docs for the meaning of the result.
    pub fn decode(
        &mut self,
        input: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event>), WsError> {
        let (n, event, chunk) = self.step(input)?;
        if let Some(c) = chunk {
            append_unmasked(payload, &input[c.start..n], c.mask, c.phase);
        }
        Ok((n, event))
    }

    /// Like [`Decoder::decode`], but data payload is unmasked where it lies and not copied: on
    /// `Ok((n, Some(Event::Data { len, .. })))` the payload chunk is `input[n - len..n]`. Other
    /// bytes of `input[..n]` (headers, control frames) are left as they were. For a relay that
    /// writes payload straight from its receive buffer (with `writev` over the chunks of one
    /// read, or after compacting them).
    pub fn decode_in_place(&mut self, input: &mut [u8]) -> Result<(usize, Option<Event>), WsError> {
        let (n, event, chunk) = self.step(input)?;
        if let Some(Chunk {
            start,
            mask: Some(mask),
            phase,
        }) = chunk
        {
            apply_mask(&mut input[start..n], mask, phase);
        }
        Ok((n, event))
    }

    /// One step of either decoding call: the result, and for a `Data` event where its payload
    /// chunk starts in `input` (it ends at the consumed count) and how to unmask it.
    fn step(&mut self, input: &[u8]) -> Result<(usize, Option<Event>, Option<Chunk>), WsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.step_inner(input);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn step_inner(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<Event>, Option<Chunk>), WsError> {
        let mut used = 0;
        loop {
            match self.stage {
                Stage::Closed => {
                    return if input.len() > used {
                        Err(WsError::FrameAfterClose)
                    } else {
                        Ok((used, None, None))
                    };
                }
                Stage::Header => {
                    used += self.read_header(&input[used..])?;
                    if self.stage == Stage::Header {
                        debug_assert_eq!(used, input.len());
                        return Ok((used, None, None));
                    }
                }
                Stage::Payload => {
                    let start = used;
                    let avail = input.len() - start;
                    let n = usize::try_from(self.frame.remaining).map_or(avail, |r| r.min(avail));
                    used += n;
                    self.frame.remaining -= n as u64;
                    let done = self.frame.remaining == 0;
                    let (mask, phase) = (self.frame.mask, self.frame.phase);
                    self.frame.phase = (phase + n % 4) % 4;
                    if self.frame.opcode.is_control() {
                        append_unmasked(&mut self.control, &input[start..used], mask, phase);
                        if !done {
                            return Ok((used, None, None));
                        }
                        self.stage = Stage::Header;
                        return Ok((used, Some(self.control_event()?), None));
                    }
                    if !done && n == 0 {
                        return Ok((used, None, None));
                    }
                    if done {
                        self.stage = Stage::Header;
                    }
                    let event = Event::Data {
                        kind: self.frame.kind,
                        len: n,
                        fin: done && self.frame.fin,
                    };
                    let chunk = Chunk { start, mask, phase };
                    return Ok((used, Some(event), Some(chunk)));
                }
            }
        }
    }

    /// Reads header bytes from `input` (checking each rule as soon as its byte is visible) and
    /// starts the frame once the header is complete. Returns the bytes used.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let mut used = 0;
        loop {
            let need = if self.head_len < 2 {
                2
            } else {
                full_header_len(self.head[1])
            };
            if self.head_len == need {
                self.start_frame()?;
                return Ok(used);
            }
            let take = (need - self.head_len).min(input.len() - used);
            if take == 0 {
                return Ok(used);
            }
            let before = self.head_len;
            self.head[before..before + take].copy_from_slice(&input[used..used + take]);
            self.head_len += take;
            used += take;
            if before == 0 {
                self.check_first_byte(self.head[0])?;
            }
            if before < 2 && self.head_len >= 2 {
                self.check_second_byte(self.head[1])?;
            }
            if before < 3
                && self.head_len >= 3
                && self.head[1] & 0x7F == 127
                && self.head[2] >= 0x80
            {
                return Err(WsError::LengthOverflow);
            }
        }
    }

    fn check_first_byte(&self, b: u8) -> Result<(), WsError> {
        let rsv = (b >> 4) & 0x7;
        if rsv != 0 {
            return Err(WsError::ReservedBits(rsv));
        }
        let opcode = OpCode::from_byte(b & 0x0F).ok_or(WsError::UnknownOpcode(b & 0x0F))?;
        let fin = b & 0x80 != 0;
        match opcode {
            _ if opcode.is_control() && !fin => Err(WsError::FragmentedControl),
            OpCode::Continuation if self.open.is_none() => Err(WsError::UnexpectedContinuation),
            OpCode::Text | OpCode::Binary if self.open.is_some() => {
                Err(WsError::ExpectedContinuation)
            }
            _ => Ok(()),
        }
    }

    fn check_second_byte(&self, b: u8) -> Result<(), WsError> {
        let masked = b & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(WsError::UnmaskedFrame),
            (Role::Client, true) => return Err(WsError::MaskedFrame),
            _ => {}
        }
        let is_control = self.head[0] & 0x08 != 0;
        if is_control && usize::from(b & 0x7F) > MAX_CONTROL_PAYLOAD {
            return Err(WsError::ControlTooLong);
        }
        Ok(())
    }

    /// The header in `self.head` is complete and its bytes checked: set up the frame.
    fn start_frame(&mut self) -> Result<(), WsError> {
        let h = &self.head;
        let fin = h[0] & 0x80 != 0;
        // Checked in `check_first_byte`.
        let opcode = OpCode::from_byte(h[0] & 0x0F).unwrap_or(OpCode::Binary);
        let (len, at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let mut kind = MessageKind::Binary;
        match opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                self.control = Vec::with_capacity(MAX_CONTROL_PAYLOAD.min(len as usize));
            }
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if opcode == OpCode::Continuation {
                    // Checked in `check_first_byte`: a message is open.
                    kind = self.open.unwrap_or(MessageKind::Binary);
                } else {
                    kind = if opcode == OpCode::Text {
                        MessageKind::Text
                    } else {
                        MessageKind::Binary
                    };
                    self.message_len = 0;
                }
                self.message_len = self.message_len.saturating_add(len);
                if self.message_len > self.max_message {
                    return Err(WsError::MessageTooBig);
                }
                self.open = (!fin).then_some(kind);
            }
        }
        self.frame = Frame {
            opcode,
            fin,
            mask,
            remaining: len,
            phase: 0,
            kind,
        };
        self.head_len = 0;
        self.stage = Stage::Payload;
        Ok(())
    }

    /// The control frame in `self.control` is complete: its event.
    fn control_event(&mut self) -> Result<Event, WsError> {
        let body = std::mem::take(&mut self.control);
        match self.frame.opcode {
            OpCode::Ping => Ok(Event::Ping(body)),
            OpCode::Pong => Ok(Event::Pong(body)),
            _ => {
                let event = match body.as_slice() {
                    [] => Event::Close {
                        code: None,
                        reason: String::new(),
                    },
                    [_] => return Err(WsError::BadClosePayload),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !is_valid_close_code(code) {
                            return Err(WsError::BadCloseCode(code));
                        }
                        let reason =
                            std::str::from_utf8(reason).map_err(|_| WsError::BadCloseReason)?;
                        Event::Close {
                            code: Some(code),
                            reason: reason.to_owned(),
                        }
                    }
                };
                self.stage = Stage::Closed;
                Ok(event)
            }
        }
    }
}

/// Header length announced by the second header byte.
fn full_header_len(second: u8) -> usize {
    let ext = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if second & 0x80 != 0 { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The mask key of the RFC 6455 §5.7 examples.
    const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const NO_LIMIT: usize = usize::MAX;

    /// A decoded stream with adjacent data chunks of one message merged: the view of a stream
    /// that does not depend on how it was split.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Close {
            code: Option<u16>,
            reason: String,
        },
        Data {
            kind: MessageKind,
            bytes: Vec<u8>,
            fin: bool,
        },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
    }

    /// Appends `item`, merging a data chunk into the previous one of the same unfinished message.
    fn push_seen(seen: &mut Vec<Seen>, item: Seen) {
        if let Seen::Data { kind, bytes, fin } = &item {
            if let Some(Seen::Data {
                kind: k,
                bytes: b,
                fin: f,
            }) = seen.last_mut()
            {
                if *k == *kind && !*f {
                    b.extend_from_slice(bytes);
                    *f = *fin;
                    return;
                }
            }
        }
        seen.push(item);
    }

    #[derive(Debug, PartialEq)]
    struct Run {
        seen: Vec<Seen>,
        /// Everything the decoder appended to the caller's payload vector.
        payload: Vec<u8>,
        error: Option<WsError>,
        /// Whether the decoder ended at a message boundary.
        boundary: bool,
    }

    /// Feeds `chunks` to a fresh decoder the way a caller with a reused receive buffer would,
    /// checking the calling convention on every call.
    fn run(role: Role, max_message: usize, chunks: &[&[u8]]) -> Run {
        let mut dec = Decoder::new(role, max_message);
        // Fed the same bytes through `decode_in_place`; must agree on every call.
        let mut in_place = Decoder::new(role, max_message);
        let mut payload = Vec::new();
        let mut seen = Vec::new();
        for chunk in chunks {
            let mut pos = 0;
            loop {
                let rest = &chunk[pos..];
                let before = payload.len();
                let result = dec.decode(rest, &mut payload);
                let mut copy = rest.to_vec();
                let other = in_place.decode_in_place(&mut copy);
                assert_eq!(result, other, "decode and decode_in_place disagree");
                if let Ok((n, Some(Event::Data { len, .. }))) = result {
                    assert_eq!(copy[n - len..n], payload[before..], "in-place chunk");
                }
                match result {
                    Err(e) => {
                        // Sticky, and nothing more is appended.
                        assert_eq!(dec.decode(rest, &mut payload), Err(e));
                        assert_eq!(dec.decode(&[], &mut payload), Err(e));
                        return Run {
                            seen,
                            payload,
                            error: Some(e),
                            boundary: dec.at_message_boundary(),
                        };
                    }
                    Ok((n, event)) => {
                        assert!(n <= rest.len(), "consumed {n} of {}", rest.len());
                        pos += n;
                        let appended = payload.len() - before;
                        match event {
                            None => {
                                assert_eq!(pos, chunk.len(), "None before the end of input");
                                assert_eq!(appended, 0);
                                break;
                            }
                            Some(Event::Data { kind, len, fin }) => {
                                assert_eq!(appended, len);
                                assert!(len <= n);
                                let bytes = payload[before..].to_vec();
                                push_seen(&mut seen, Seen::Data { kind, bytes, fin });
                            }
                            Some(Event::Close { code, reason }) => {
                                assert_eq!(appended, 0);
                                assert!(dec.is_closed());
                                push_seen(&mut seen, Seen::Close { code, reason });
                            }
                            Some(Event::Ping(p)) => {
                                assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                                push_seen(&mut seen, Seen::Ping(p));
                            }
                            Some(Event::Pong(p)) => {
                                assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                                push_seen(&mut seen, Seen::Pong(p));
                            }
                        }
                    }
                }
            }
        }
        Run {
            seen,
            payload,
            error: None,
            boundary: dec.at_message_boundary(),
        }
    }

    fn run_whole(role: Role, input: &[u8]) -> Run {
        run(role, NO_LIMIT, &[input])
    }

    fn byte_by_byte(input: &[u8]) -> Vec<&[u8]> {
        input.chunks(1).collect()
    }

    /// Wire rule 4: the same stream split at every pair of offsets, and byte by byte, decodes
    /// to the same result as the whole stream. Returns that result.
    fn assert_split_invariant(role: Role, max_message: usize, stream: &[u8]) -> Run {
        let whole = run(role, max_message, &[stream]);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let parts = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(
                    run(role, max_message, &parts),
                    whole,
                    "split at {i} and {j}"
                );
            }
        }
        assert_eq!(
            run(role, max_message, &byte_by_byte(stream)),
            whole,
            "byte by byte"
        );
        whole
    }

    fn data(kind: MessageKind, bytes: &[u8]) -> Seen {
        Seen::Data {
            kind,
            bytes: bytes.to_vec(),
            fin: true,
        }
    }

    fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(opcode, fin, payload, mask, &mut out);
        out
    }

    /// The mask a client would put on a frame: the peer role decides whether one is used.
    fn mask_for(receiver: Role, seed: u8) -> Option<[u8; 4]> {
        (receiver == Role::Server).then_some([seed, seed ^ 0x5a, 0xa5, seed.wrapping_mul(7)])
    }

    fn err(role: Role, input: &[u8]) -> WsError {
        run_whole(role, input).error.expect("rejected")
    }

    // --- RFC 6455 §5.7 examples ---

    #[test]
    fn rfc_single_frame_unmasked_text() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(frame(OpCode::Text, true, b"Hello", None), bytes);
        let r = assert_split_invariant(Role::Client, NO_LIMIT, &bytes);
        assert_eq!(r.seen, [data(MessageKind::Text, b"Hello")]);
        assert_eq!(r.error, None);
        assert!(r.boundary);
    }

    #[test]
    fn rfc_single_frame_masked_text() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(frame(OpCode::Text, true, b"Hello", Some(RFC_MASK)), bytes);
        let r = assert_split_invariant(Role::Server, NO_LIMIT, &bytes);
        assert_eq!(r.seen, [data(MessageKind::Text, b"Hello")]);
        assert_eq!(r.payload, b"Hello");
    }

    #[test]
    fn rfc_fragmented_unmasked_text() {
        let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let mut encoded = frame(OpCode::Text, false, b"Hel", None);
        encoded.extend(frame(OpCode::Continuation, true, b"lo", None));
        assert_eq!(encoded, bytes);
        let r = assert_split_invariant(Role::Client, NO_LIMIT, &bytes);
        assert_eq!(r.seen, [data(MessageKind::Text, b"Hello")]);

        // The raw events: one chunk per frame, FIN only on the last.
        let mut dec = Decoder::new(Role::Client, NO_LIMIT);
        let mut payload = Vec::new();
        let (n1, e1) = dec.decode(&bytes, &mut payload).expect("valid");
        assert_eq!(n1, 5);
        let chunk = |len, fin| {
            Some(Event::Data {
                kind: MessageKind::Text,
                len,
                fin,
            })
        };
        assert_eq!(e1, chunk(3, false));
        assert!(!dec.at_message_boundary());
        let (n2, e2) = dec.decode(&bytes[n1..], &mut payload).expect("valid");
        assert_eq!((n2, e2), (4, chunk(2, true)));
        assert!(dec.at_message_boundary());
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let mut out = Vec::new();
        encode_ping(b"Hello", None, &mut out);
        assert_eq!(out, ping);
        let r = assert_split_invariant(Role::Client, NO_LIMIT, &ping);
        assert_eq!(r.seen, [Seen::Ping(b"Hello".to_vec())]);
        assert!(
            r.payload.is_empty(),
            "control payload never reaches the data vector"
        );

        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        out.clear();
        encode_pong(b"Hello", Some(RFC_MASK), &mut out);
        assert_eq!(out, pong);
        let r = assert_split_invariant(Role::Server, NO_LIMIT, &pong);
        assert_eq!(r.seen, [Seen::Pong(b"Hello".to_vec())]);
    }

    #[test]
    fn rfc_256_and_65536_byte_binary() {
        let p256: Vec<u8> = (0..=255).collect();
        let f256 = frame(OpCode::Binary, true, &p256, None);
        assert_eq!(f256[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(f256.len(), 4 + 256);
        assert_eq!(header_len(256, false), 4);

        let p64k: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
        let f64k = frame(OpCode::Binary, true, &p64k, None);
        assert_eq!(
            f64k[..10],
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(f64k.len(), 10 + 65536);
        assert_eq!(header_len(65536, false), 10);

        for (p, f) in [(&p256, &f256), (&p64k, &f64k)] {
            let whole = run_whole(Role::Client, f);
            assert_eq!(whole.seen, [data(MessageKind::Binary, p)]);
            for k in [1, 2, 3, 4, 5, 9, 10, 11, 200, f.len() - 1] {
                let split = run(Role::Client, NO_LIMIT, &[&f[..k], &f[k..]]);
                assert_eq!(split, whole, "split at {k}");
            }
            // Masked toward a server, in 7-byte reads.
            let masked = frame(OpCode::Binary, true, p, Some(RFC_MASK));
            let chunks: Vec<&[u8]> = masked.chunks(7).collect();
            assert_eq!(run(Role::Server, NO_LIMIT, &chunks).seen, whole.seen);
        }
    }

    // --- segmentation invariance (wire rule 4) ---

    /// A fragmented text message with a ping between its fragments, a binary message, a pong,
    /// an empty message, a fragmented binary message with an empty middle fragment, a close.
    fn conversation(receiver: Role) -> (Vec<u8>, Vec<Seen>) {
        let m = |seed| mask_for(receiver, seed);
        let bin: Vec<u8> = (0..200u8).collect();
        let mut s = Vec::new();
        encode_frame(OpCode::Text, false, b"Hel", m(1), &mut s);
        encode_ping(b"are you there", m(2), &mut s);
        encode_frame(OpCode::Continuation, true, b"lo", m(3), &mut s);
        encode_frame(OpCode::Binary, true, &bin, m(4), &mut s);
        encode_pong(b"", m(5), &mut s);
        encode_frame(OpCode::Binary, true, b"", m(6), &mut s);
        encode_frame(OpCode::Binary, false, b"abc", m(7), &mut s);
        encode_frame(OpCode::Continuation, false, b"", m(8), &mut s);
        encode_frame(OpCode::Continuation, true, b"def", m(9), &mut s);
        encode_close(Some(close_code::NORMAL), "bye", m(10), &mut s);
        let expected = vec![
            Seen::Data {
                kind: MessageKind::Text,
                bytes: b"Hel".to_vec(),
                fin: false,
            },
            Seen::Ping(b"are you there".to_vec()),
            data(MessageKind::Text, b"lo"),
            data(MessageKind::Binary, &bin),
            Seen::Pong(Vec::new()),
            data(MessageKind::Binary, b""),
            data(MessageKind::Binary, b"abcdef"),
            Seen::Close {
                code: Some(1000),
                reason: "bye".to_owned(),
            },
        ];
        (s, expected)
    }

    #[test]
    fn conversation_is_split_invariant_both_roles() {
        for role in [Role::Server, Role::Client] {
            let (stream, expected) = conversation(role);
            let r = assert_split_invariant(role, NO_LIMIT, &stream);
            assert_eq!(r.seen, expected, "{role:?}");
            assert_eq!(r.error, None);
            assert!(r.boundary);
            let mut all = b"Hello".to_vec();
            all.extend(0..200u8);
            all.extend_from_slice(b"abcdef");
            assert_eq!(r.payload, all);
        }
    }

    #[test]
    fn several_frames_in_one_input_one_event_per_call() {
        let (stream, expected) = conversation(Role::Server);
        let mut dec = Decoder::new(Role::Server, NO_LIMIT);
        let mut payload = Vec::new();
        let mut pos = 0;
        let mut events = 0;
        while let (n, Some(_)) = dec.decode(&stream[pos..], &mut payload).expect("valid") {
            pos += n;
            events += 1;
        }
        assert_eq!(pos, stream.len());
        // Two more raw events than merged ones: "abc" + "" + "def" are three chunks.
        assert_eq!(events, expected.len() + 2);
        assert!(dec.is_closed());
    }

    #[test]
    fn errors_are_split_invariant() {
        // A valid prefix, then a continuation of a message that was never started.
        let (mut stream, _) = conversation(Role::Client);
        stream.truncate(stream.len() - 7); // drop the close frame (2 + 2 + "bye")
        stream.extend_from_slice(&[0x80, 0x01, b'x']);
        let r = assert_split_invariant(Role::Client, NO_LIMIT, &stream);
        assert_eq!(r.error, Some(WsError::UnexpectedContinuation));
        assert_eq!(r.seen.len(), 7);
    }

    // --- malformed input ---

    #[test]
    fn reserved_bits_and_opcodes() {
        for b0 in [0xC1, 0xA1, 0x91, 0xF2] {
            let e = err(Role::Client, &[b0, 0x00]);
            assert_eq!(e, WsError::ReservedBits((b0 >> 4) & 7), "{b0:#x}");
            assert_eq!(e.close_code(), 1002);
        }
        for op in [0x3, 0x4, 0x7, 0xB, 0xF] {
            let e = err(Role::Client, &[0x80 | op, 0x00]);
            assert_eq!(e, WsError::UnknownOpcode(op));
            assert_eq!(e.close_code(), 1002);
        }
        // Reported from the first byte alone.
        assert_eq!(
            Decoder::new(Role::Server, NO_LIMIT).decode(&[0xC1], &mut Vec::new()),
            Err(WsError::ReservedBits(4))
        );
    }

    #[test]
    fn masking_must_follow_the_role() {
        let masked = frame(OpCode::Binary, true, b"x", Some(RFC_MASK));
        let unmasked = frame(OpCode::Binary, true, b"x", None);
        assert_eq!(err(Role::Client, &masked), WsError::MaskedFrame);
        assert_eq!(err(Role::Server, &unmasked), WsError::UnmaskedFrame);
        assert_eq!(WsError::MaskedFrame.close_code(), 1002);
        assert_eq!(WsError::UnmaskedFrame.close_code(), 1002);
        // Control frames too.
        assert_eq!(err(Role::Server, &[0x89, 0x00]), WsError::UnmaskedFrame);
    }

    #[test]
    fn fragmentation_rules() {
        let r = Role::Client;
        // Continuation without a start.
        assert_eq!(err(r, &[0x80, 0x00]), WsError::UnexpectedContinuation);
        assert_eq!(err(r, &[0x00, 0x00]), WsError::UnexpectedContinuation);
        // ... also after a message that ended.
        let mut s = frame(OpCode::Text, true, b"a", None);
        s.extend(frame(OpCode::Continuation, true, b"b", None));
        assert_eq!(err(r, &s), WsError::UnexpectedContinuation);
        // A new data frame while a fragmented message is open.
        for op in [OpCode::Text, OpCode::Binary] {
            let mut s = frame(OpCode::Binary, false, b"a", None);
            s.extend(frame(op, true, b"b", None));
            let e = err(r, &s);
            assert_eq!(e, WsError::ExpectedContinuation);
            assert_eq!(e.close_code(), 1002);
        }
        // Fragmented control frames (FIN clear), even inside a message.
        for op in [0x8, 0x9, 0xA] {
            assert_eq!(err(r, &[op, 0x00]), WsError::FragmentedControl);
        }
        let mut s = frame(OpCode::Text, false, b"a", None);
        s.extend_from_slice(&[0x09, 0x00]);
        assert_eq!(err(r, &s), WsError::FragmentedControl);
    }

    #[test]
    fn control_frames_are_at_most_125_bytes() {
        let ok = [0x89, 125];
        let mut s = ok.to_vec();
        s.extend([7; 125]);
        assert_eq!(run_whole(Role::Client, &s).seen, [Seen::Ping(vec![7; 125])]);
        for len7 in [126, 127] {
            let e = err(Role::Client, &[0x89, len7]);
            assert_eq!(e, WsError::ControlTooLong);
            assert_eq!(e.close_code(), 1002);
            assert_eq!(
                err(Role::Server, &[0x88, 0x80 | len7]),
                WsError::ControlTooLong
            );
        }
    }

    #[test]
    fn length_with_top_bit_set() {
        let e = err(Role::Client, &[0x82, 0x7F, 0x80]);
        assert_eq!(e, WsError::LengthOverflow);
        assert_eq!(e.close_code(), 1002);
        let mut max = vec![0x82, 0x7F];
        max.extend((i64::MAX as u64).to_be_bytes());
        let r = run_whole(Role::Client, &max);
        assert_eq!(r.error, None, "2^63 - 1 is a legal length");
        assert!(!r.boundary);
    }

    #[test]
    fn message_size_limit() {
        // One frame over the limit: rejected from its header, before any payload arrives.
        let f = frame(OpCode::Binary, true, &[1; 11], None);
        let e = err_with_limit(10, &f[..2]);
        assert_eq!(e, WsError::MessageTooBig);
        assert_eq!(e.close_code(), 1009);
        // Exactly at the limit is fine.
        let f = frame(OpCode::Binary, true, &[1; 10], None);
        assert_eq!(run(Role::Client, 10, &[&f]).error, None);
        // Fragments count together; each message starts from zero.
        let mut s = frame(OpCode::Text, false, &[1; 6], None);
        s.extend(frame(OpCode::Continuation, true, &[2; 4], None));
        s.extend(frame(OpCode::Text, false, &[3; 6], None));
        let ok = run(Role::Client, 10, &[&s]);
        assert_eq!(ok.error, None);
        s.extend(frame(OpCode::Continuation, true, &[4; 5], None));
        assert_eq!(err_with_limit(10, &s), WsError::MessageTooBig);
        // Control frames do not count.
        let mut s = frame(OpCode::Text, false, &[1; 10], None);
        s.extend(frame(OpCode::Ping, true, &[0; 100], None));
        s.extend(frame(OpCode::Continuation, true, b"", None));
        assert_eq!(run(Role::Client, 10, &[&s]).error, None);
    }

    fn err_with_limit(max: usize, input: &[u8]) -> WsError {
        run(Role::Client, max, &[input]).error.expect("rejected")
    }

    fn close_frame(payload: &[u8]) -> Vec<u8> {
        frame(OpCode::Close, true, payload, None)
    }

    #[test]
    fn close_payload_rules() {
        let r = Role::Client;
        assert_eq!(
            run_whole(r, &close_frame(b"")).seen,
            [Seen::Close {
                code: None,
                reason: String::new()
            }]
        );
        let e = err(r, &close_frame(&[0x03]));
        assert_eq!((e, e.close_code()), (WsError::BadClosePayload, 1002));
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            let e = err(r, &close_frame(&code.to_be_bytes()));
            assert_eq!((e, e.close_code()), (WsError::BadCloseCode(code), 1002));
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999,
        ] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice("gone ✓".as_bytes());
            let seen = run_whole(r, &close_frame(&p)).seen;
            let expected = Seen::Close {
                code: Some(code),
                reason: "gone ✓".to_owned(),
            };
            assert_eq!(seen, [expected]);
        }
        let e = err(r, &close_frame(&[0x03, 0xe8, 0xff, 0xfe]));
        assert_eq!((e, e.close_code()), (WsError::BadCloseReason, 1007));
        // A character split at the end of the reason is invalid too.
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(&"✓".as_bytes()[..2]);
        assert_eq!(err(r, &close_frame(&p)), WsError::BadCloseReason);
    }

    #[test]
    fn nothing_after_close() {
        let mut s = close_frame(&1000u16.to_be_bytes());
        s.extend(frame(OpCode::Text, true, b"late", None));
        let r = run_whole(Role::Client, &s);
        assert_eq!(r.seen.len(), 1);
        assert_eq!(r.error, Some(WsError::FrameAfterClose));
        // An empty read after the close is not an error.
        let mut dec = Decoder::new(Role::Client, NO_LIMIT);
        let c = close_frame(b"");
        let (n, event) = dec.decode(&c, &mut Vec::new()).expect("valid");
        assert_eq!(n, c.len());
        assert!(matches!(event, Some(Event::Close { .. })));
        assert_eq!(dec.decode(&[], &mut Vec::new()), Ok((0, None)));
        assert!(dec.at_message_boundary());
    }

    #[test]
    fn close_codes_and_labels() {
        use WsError::*;
        let all = [
            (BadCloseCode(5), "bad_close_code", 1002),
            (BadClosePayload, "bad_close_payload", 1002),
            (BadCloseReason, "bad_close_reason", 1007),
            (ControlTooLong, "control_too_long", 1002),
            (ExpectedContinuation, "expected_continuation", 1002),
            (FragmentedControl, "fragmented_control", 1002),
            (FrameAfterClose, "frame_after_close", 1002),
            (LengthOverflow, "length_overflow", 1002),
            (MaskedFrame, "masked_frame", 1002),
            (MessageTooBig, "message_too_big", 1009),
            (ReservedBits(1), "reserved_bits", 1002),
            (UnexpectedContinuation, "unexpected_continuation", 1002),
            (UnknownOpcode(3), "unknown_opcode", 1002),
            (UnmaskedFrame, "unmasked_frame", 1002),
        ];
        for (e, label, code) in all {
            assert_eq!(e.label(), label);
            assert_eq!(e.close_code(), code);
            assert!(!e.to_string().is_empty());
        }
    }

    // --- encoding ---

    #[test]
    fn opcode_bytes_round_trip() {
        for b in 0..16u8 {
            match OpCode::from_byte(b) {
                Some(op) => assert_eq!(op.to_byte(), b),
                None => assert!(matches!(b, 3..=7 | 0xB..=0xF)),
            }
        }
        assert!(OpCode::Close.is_control() && OpCode::Ping.is_control());
        assert!(!OpCode::Continuation.is_control() && !OpCode::Text.is_control());
    }

    #[test]
    fn header_lengths_at_the_boundaries() {
        for (len, unmasked) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (0xFFFF, 4),
            (0x1_0000, 10),
            (u64::MAX >> 1, 10),
        ] {
            for mask in [None, Some(RFC_MASK)] {
                let expected = unmasked + if mask.is_some() { 4 } else { 0 };
                assert_eq!(header_len(len, mask.is_some()), expected, "{len}");
                let (h, n) = encode_header(OpCode::Binary, true, len, mask);
                assert_eq!(n, expected, "{len}");
                if let Some(m) = mask {
                    assert_eq!(h[n - 4..n], m);
                }
            }
        }
    }

    /// A relay writes `encode_header` then the payload itself: same bytes as `encode_frame`.
    #[test]
    fn header_plus_payload_equals_frame() {
        let payload = vec![0xAB; 300];
        for mask in [None, Some(RFC_MASK)] {
            let (h, n) = encode_header(OpCode::Binary, false, payload.len() as u64, mask);
            let mut manual = h[..n].to_vec();
            let start = manual.len();
            manual.extend_from_slice(&payload);
            if let Some(m) = mask {
                apply_mask(&mut manual[start..], m, 0);
            }
            assert_eq!(manual, frame(OpCode::Binary, false, &payload, mask));
        }
    }

    #[test]
    fn close_and_ping_are_cut_to_fit() {
        let long = "é".repeat(100); // 200 bytes; 123 is mid-character
        let mut out = Vec::new();
        encode_close(Some(close_code::GOING_AWAY), &long, None, &mut out);
        assert_eq!(out[1] as usize, 2 + 122);
        let seen = run_whole(Role::Client, &out).seen;
        assert_eq!(
            seen,
            [Seen::Close {
                code: Some(1001),
                reason: "é".repeat(61)
            }]
        );
        out.clear();
        encode_close(None, "ignored", Some(RFC_MASK), &mut out);
        assert_eq!(out, [0x88, 0x80, 0x37, 0xfa, 0x21, 0x3d]);
        out.clear();
        encode_ping(&[1; 300], None, &mut out);
        assert_eq!(out.len(), 2 + 125);
        out.clear();
        encode_pong(&[1; 126], None, &mut out);
        assert_eq!(
            run_whole(Role::Client, &out).seen,
            [Seen::Pong(vec![1; 125])]
        );
    }

    fn mask_reference(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn mask_matches_the_bytewise_definition() {
        let src: Vec<u8> = (0..67u8).collect();
        for len in 0..src.len() {
            for offset in 0..9 {
                let mut fast = src[..len].to_vec();
                let mut slow = fast.clone();
                apply_mask(&mut fast, RFC_MASK, offset);
                mask_reference(&mut slow, RFC_MASK, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    // --- corpus and properties ---

    /// Decodes `input` in both roles, whole and byte by byte: no panic, same result.
    fn decode_is_total(input: &[u8]) {
        for role in [Role::Client, Role::Server] {
            for max in [NO_LIMIT, 16] {
                let whole = run(role, max, &[input]);
                assert_eq!(run(role, max, &byte_by_byte(input)), whole);
            }
        }
    }

    /// Replays the regression corpus (hand-made edge cases and any fuzzer finds).
    #[test]
    fn regression_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/ws");
        let entries = std::fs::read_dir(dir).expect("corpus directory exists");
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("readable corpus entry").path();
            let input = std::fs::read(&path).expect("readable corpus file");
            decode_is_total(&input);
            count += 1;
        }
        assert!(count > 0, "empty corpus at {dir}");
    }

    /// One step of a generated stream.
    #[derive(Debug, Clone)]
    enum Piece {
        /// A message in fragments; after each fragment, maybe a ping.
        Message {
            kind: MessageKind,
            fragments: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        },
        Pong(Vec<u8>),
    }

    fn arb_piece() -> impl Strategy<Value = Piece> {
        let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
        let kind = prop_oneof![Just(MessageKind::Binary), Just(MessageKind::Text)];
        prop_oneof![
            4 => (
                kind,
                proptest::collection::vec(
                    (bytes(300), proptest::option::weighted(0.3, bytes(126))),
                    1..4,
                ),
            )
                .prop_map(|(kind, fragments)| Piece::Message { kind, fragments }),
            1 => bytes(126).prop_map(Piece::Pong),
        ]
    }

    /// Encodes `pieces` (then a close) for `receiver`, masking with keys drawn from `masks`;
    /// returns the stream and what decoding it must show.
    fn encode_pieces(
        pieces: &[Piece],
        close: &Option<(u16, String)>,
        receiver: Role,
        masks: &[[u8; 4]],
    ) -> (Vec<u8>, Vec<Seen>) {
        let mut keys = masks.iter().cycle().copied();
        let mut next_mask = || {
            let key = keys.next();
            if receiver == Role::Server {
                key
            } else {
                None
            }
        };
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Message { kind, fragments } => {
                    for (i, (bytes, ping)) in fragments.iter().enumerate() {
                        let fin = i + 1 == fragments.len();
                        let opcode = match (i, kind) {
                            (0, MessageKind::Text) => OpCode::Text,
                            (0, MessageKind::Binary) => OpCode::Binary,
                            _ => OpCode::Continuation,
                        };
                        encode_frame(opcode, fin, bytes, next_mask(), &mut out);
                        let chunk = Seen::Data {
                            kind: *kind,
                            bytes: bytes.clone(),
                            fin,
                        };
                        push_seen(&mut seen, chunk);
                        if let Some(p) = ping {
                            encode_ping(p, next_mask(), &mut out);
                            let p = p[..p.len().min(MAX_CONTROL_PAYLOAD)].to_vec();
                            push_seen(&mut seen, Seen::Ping(p));
                        }
                    }
                }
                Piece::Pong(p) => {
                    encode_pong(p, next_mask(), &mut out);
                    let p = p[..p.len().min(MAX_CONTROL_PAYLOAD)].to_vec();
                    push_seen(&mut seen, Seen::Pong(p));
                }
            }
        }
        if let Some((code, reason)) = close {
            encode_close(Some(*code), reason, next_mask(), &mut out);
            let reason = reason.clone();
            push_seen(
                &mut seen,
                Seen::Close {
                    code: Some(*code),
                    reason,
                },
            );
        }
        (out, seen)
    }

    fn arb_role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Client), Just(Role::Server)]
    }

    proptest! {
        #[test]
        fn round_trip_at_random_splits(
            pieces in proptest::collection::vec(arb_piece(), 0..6),
            close in proptest::option::of((
                prop_oneof![Just(1000u16), 1000..=1003u16, 1007..=1014u16, 3000..=4999u16],
                "\\PC{0,30}",
            )),
            receiver in arb_role(),
            masks in proptest::collection::vec(any::<[u8; 4]>(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let (stream, expected) = encode_pieces(&pieces, &close, receiver, &masks);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            at.push(0);
            at.push(stream.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let r = run(receiver, NO_LIMIT, &chunks);
            prop_assert_eq!(r.error, None);
            prop_assert!(r.boundary);
            let all: Vec<u8> = expected.iter().flat_map(|s| match s {
                Seen::Data { bytes, .. } => bytes.clone(),
                _ => Vec::new(),
            }).collect();
            prop_assert_eq!(&r.payload, &all);
            prop_assert_eq!(r.seen, expected);
        }

        #[test]
        fn decoder_is_total_on_arbitrary_bytes(
            input in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            decode_is_total(&input);
        }

        #[test]
        fn decoder_is_total_on_mutated_streams(
            pieces in proptest::collection::vec(arb_piece(), 1..4),
            receiver in arb_role(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let (mut stream, _) = encode_pieces(&pieces, &None, receiver, &[RFC_MASK]);
            let i = at.index(stream.len());
            stream[i] = byte;
            decode_is_total(&stream);
        }

        #[test]
        fn masking_is_an_involution(
            buf in proptest::collection::vec(any::<u8>(), 0..200),
            mask in any::<[u8; 4]>(),
            offset in 0usize..1000,
            split in any::<prop::sample::Index>(),
        ) {
            let mut once = buf.clone();
            apply_mask(&mut once, mask, offset);
            let mut slow = buf.clone();
            mask_reference(&mut slow, mask, offset);
            prop_assert_eq!(&once, &slow);
            // Masking piecewise from any split point gives the same bytes.
            let k = split.index(buf.len() + 1);
            let mut pieces = buf.clone();
            let (a, b) = pieces.split_at_mut(k);
            apply_mask(a, mask, offset);
            apply_mask(b, mask, offset + k);
            prop_assert_eq!(&pieces, &once);
            apply_mask(&mut once, mask, offset);
            prop_assert_eq!(once, buf);
        }
    }
}
