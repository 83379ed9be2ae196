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
mod tests;
