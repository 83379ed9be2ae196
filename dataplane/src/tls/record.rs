//! TLS records after the handshake: seals and opens TLS 1.3 and TLS 1.2 records (AES-128-GCM,
//! AES-256-GCM, ChaCha20-Poly1305) in place, in the caller's buffers, with the traffic keys
//! rustls hands over when its handshake is done (`dangerous_into_kernel_connection`, the same
//! keys kernel TLS would take). Key updates and TLS 1.3 session tickets go to rustls'
//! `KernelConnection`, which derives the next keys; nothing here allocates per record.
//!
//! It does no I/O and keeps no buffers: [`RecordLayer::open`] decrypts the record at the front of
//! a slice, [`RecordLayer::seal`] appends records to a `Vec` the caller writes out.

use std::ops::Range;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, Error, ExtractedSecrets, InvalidMessage,
    ProtocolVersion, SupportedCipherSuite,
};

/// Bytes of a record header: content type, version, length.
pub const HEADER_LEN: usize = 5;
/// Most plaintext per record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Most ciphertext after a header: TLS 1.3 allows 2^14 + 256, TLS 1.2 2^14 + 2048.
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 2048;
/// The longest record on the wire.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;
/// What sealing adds to a full record at most (header, inner type or explicit nonce, tag).
pub const RECORD_OVERHEAD: usize = HEADER_LEN + 8 + TAG_LEN;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// TLS 1.2 AES-GCM sends the last 8 bytes of each record's nonce in the clear.
const EXPLICIT_NONCE_LEN: usize = 8;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_HELLO_REQUEST: u8 = 0;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_BAD_RECORD_MAC: u8 = 20;
const ALERT_RECORD_OVERFLOW: u8 = 22;
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_USER_CANCELED: u8 = 90;
const ALERT_LEVEL_WARNING: u8 = 1;
const ALERT_LEVEL_FATAL: u8 = 2;
/// TLS 1.3 ciphertext is at most 2^14 + 256 bytes (RFC 8446 §5.2).
const MAX_CIPHERTEXT_TLS13: usize = MAX_PLAINTEXT + 256;
/// Records in a row that carry no application data (key updates, tickets, warnings, empty
/// records) before the peer is taken to be wasting our time; rustls allows as many.
const MAX_RECORDS_WITHOUT_DATA: u32 = 32;

/// Starts a key update this many records before the suite's confidentiality limit.
const KEY_UPDATE_MARGIN: u64 = 1 << 10;

/// rustls' view of the session after the handshake, for key updates and session tickets.
pub enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }

    fn suite(&self) -> SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }

    fn version(&self) -> ProtocolVersion {
        match self {
            Kernel::Client(k) => k.protocol_version(),
            Kernel::Server(k) => k.protocol_version(),
        }
    }
}

/// The key, IV and sequence number of one direction. The cipher context (about 600 bytes of
/// expanded key in aws-lc) is built on first use: a parked connection that has not carried a
/// byte yet keeps only the 32-byte key.
struct Keys {
    algorithm: &'static aead::Algorithm,
    /// The traffic key until the cipher is built from it (zeroed when dropped).
    secrets: Option<ConnectionTrafficSecrets>,
    cipher: Option<LessSafeKey>,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Keys, Error> {
        let (algorithm, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { iv, .. } => (&aead::AES_128_GCM, iv),
            ConnectionTrafficSecrets::Aes256Gcm { iv, .. } => (&aead::AES_256_GCM, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { iv, .. } => (&aead::CHACHA20_POLY1305, iv),
            _ => return Err(Error::General("unsupported TLS cipher suite".into())),
        };
        let iv: [u8; NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| Error::General("bad TLS traffic IV".into()))?;
        Ok(Keys {
            algorithm,
            secrets: Some(secrets),
            cipher: None,
            iv,
            seq,
        })
    }

    /// The cipher, built from the key the first time.
    fn cipher(&mut self) -> Result<&LessSafeKey, Error> {
        if let Some(secrets) = self.secrets.take() {
            let key = match &secrets {
                ConnectionTrafficSecrets::Aes128Gcm { key, .. }
                | ConnectionTrafficSecrets::Aes256Gcm { key, .. }
                | ConnectionTrafficSecrets::Chacha20Poly1305 { key, .. } => key,
                _ => return Err(Error::General("unsupported TLS cipher suite".into())),
            };
            let key = UnboundKey::new(self.algorithm, key.as_ref())
                .map_err(|_| Error::General("bad TLS traffic key".into()))?;
            self.cipher = Some(LessSafeKey::new(key));
        }
        self.cipher
            .as_ref()
            .ok_or_else(|| Error::General("TLS traffic key missing".into()))
    }

    /// The IV with the sequence number XORed into its last 8 bytes (RFC 8446 §5.3).
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }
}

/// What [`RecordLayer::open`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Not a whole record yet: read more.
    Incomplete,
    /// A record of `len` bytes carrying application data, decrypted in place at `plaintext`
    /// (a range of the buffer given to `open`; may be empty).
    Data { len: usize, plaintext: Range<usize> },
    /// A record of `len` bytes for the session itself (a key update, a session ticket, a
    /// warning): nothing to deliver. Check [`RecordLayer::owes_output`].
    Control { len: usize },
    /// A record of `len` bytes carrying close_notify: the end of the peer's stream.
    Closed { len: usize },
}

/// TLS record protection for one established session.
pub struct RecordLayer {
    tls13: bool,
    /// TLS 1.2 AES-GCM: nonces carry an explicit part.
    explicit_nonce: bool,
    tx: Keys,
    rx: Keys,
    kernel: Kernel,
    /// The peer asked for a key update: ours goes out before our next record.
    owe_key_update: bool,
    /// Records under one key before a key update is due (TLS 1.3) or the session must end.
    tx_limit: u64,
    peer_closed: bool,
    /// close_notify or a fatal alert was sealed: no record follows it.
    closed: bool,
    /// Records in a row opened without application data in them.
    without_data: u32,
}

impl RecordLayer {
    pub fn new(secrets: ExtractedSecrets, kernel: Kernel) -> Result<RecordLayer, Error> {
        let tls13 = match kernel.version() {
            ProtocolVersion::TLSv1_3 => true,
            ProtocolVersion::TLSv1_2 => false,
            other => return Err(Error::General(format!("unsupported TLS version {other:?}"))),
        };
        let suite = kernel.suite();
        let tx_limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let explicit_nonce = !tls13
            && !matches!(
                secrets.tx.1,
                ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
            );
        Ok(RecordLayer {
            tls13,
            explicit_nonce,
            tx: Keys::new(secrets.tx)?,
            rx: Keys::new(secrets.rx)?,
            kernel,
            owe_key_update: false,
            tx_limit,
            peer_closed: false,
            closed: false,
            without_data: 0,
        })
    }

    /// Tests: pretend the cipher's confidentiality limit is `records` records away.
    #[cfg(test)]
    pub(crate) fn limit_within(&mut self, records: u64) {
        self.tx_limit = self.tx.seq + KEY_UPDATE_MARGIN + records;
    }

    pub fn is_tls13(&self) -> bool {
        self.tls13
    }

    /// Opens the record at the front of `buf`, in place.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, Error> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(Opened::Incomplete);
        };
        let header: [u8; HEADER_LEN] = [header[0], header[1], header[2], header[3], header[4]];
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let limit = if self.tls13 {
            MAX_CIPHERTEXT_TLS13
        } else {
            MAX_CIPHERTEXT
        };
        if len > limit {
            return Err(Error::InvalidMessage(InvalidMessage::MessageTooLarge));
        }
        let total = HEADER_LEN + len;
        if buf.len() < total {
            return Ok(Opened::Incomplete);
        }
        if self.peer_closed {
            return Err(Error::General("TLS record after close_notify".into()));
        }
        let record = &mut buf[..total];
        let (content_type, content) = if self.tls13 {
            self.open_tls13(header, record)?
        } else {
            self.open_tls12(header, record)?
        };
        self.rx.seq += 1;
        if content.len() > MAX_PLAINTEXT {
            return Err(Error::InvalidMessage(InvalidMessage::MessageTooLarge));
        }
        match content_type {
            CONTENT_APPLICATION_DATA if content.is_empty() => self.count_without_data()?,
            CONTENT_APPLICATION_DATA => self.without_data = 0,
            _ => {}
        }
        match content_type {
            CONTENT_APPLICATION_DATA => Ok(Opened::Data {
                len: total,
                plaintext: content,
            }),
            CONTENT_ALERT => self.alert(&buf[content], total),
            CONTENT_HANDSHAKE if content.is_empty() => {
                Err(Error::InvalidMessage(InvalidMessage::InvalidEmptyPayload))
            }
            CONTENT_HANDSHAKE => {
                self.count_without_data()?;
                self.post_handshake(&buf[content])?;
                Ok(Opened::Control { len: total })
            }
            other => Err(Error::General(format!(
                "unexpected TLS content type {other} after the handshake"
            ))),
        }
    }

    fn count_without_data(&mut self) -> Result<(), Error> {
        self.without_data += 1;
        if self.without_data > MAX_RECORDS_WITHOUT_DATA {
            return Err(Error::General(format!(
                "more than {MAX_RECORDS_WITHOUT_DATA} TLS records in a row without data"
            )));
        }
        Ok(())
    }

    /// TLS 1.3: every record is application_data outside; the real type is the last non-zero
    /// byte of the plaintext (RFC 8446 §5.2).
    fn open_tls13(
        &mut self,
        header: [u8; HEADER_LEN],
        record: &mut [u8],
    ) -> Result<(u8, Range<usize>), Error> {
        if header[0] != CONTENT_APPLICATION_DATA {
            return Err(Error::General(format!(
                "unencrypted TLS record (type {}) after the handshake",
                header[0]
            )));
        }
        let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
        let plaintext_len = self
            .rx
            .cipher()?
            .open_in_place(nonce, Aad::from(header), &mut record[HEADER_LEN..])
            .map_err(|_| Error::DecryptError)?
            .len();
        let mut end = HEADER_LEN + plaintext_len;
        while end > HEADER_LEN && record[end - 1] == 0 {
            end -= 1;
        }
        if end == HEADER_LEN {
            return Err(Error::General("TLS record without a content type".into()));
        }
        Ok((record[end - 1], HEADER_LEN..end - 1))
    }

    /// TLS 1.2: the header carries the type; AES-GCM records start with the explicit nonce.
    fn open_tls12(
        &mut self,
        header: [u8; HEADER_LEN],
        record: &mut [u8],
    ) -> Result<(u8, Range<usize>), Error> {
        let (nonce, start) = if self.explicit_nonce {
            let Some(explicit) = record.get(HEADER_LEN..HEADER_LEN + EXPLICIT_NONCE_LEN) else {
                return Err(Error::DecryptError);
            };
            let mut nonce = self.rx.iv;
            nonce[4..].copy_from_slice(explicit);
            (nonce, HEADER_LEN + EXPLICIT_NONCE_LEN)
        } else {
            (self.rx.nonce(), HEADER_LEN)
        };
        let Some(plaintext_len) = (record.len() - start).checked_sub(TAG_LEN) else {
            return Err(Error::DecryptError);
        };
        let aad = tls12_aad(self.rx.seq, header[0], plaintext_len);
        self.rx
            .cipher()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut record[start..],
            )
            .map_err(|_| Error::DecryptError)?;
        Ok((header[0], start..start + plaintext_len))
    }

    fn alert(&mut self, alert: &[u8], len: usize) -> Result<Opened, Error> {
        let &[level, description] = alert else {
            return Err(Error::InvalidMessage(InvalidMessage::MessageTooShort));
        };
        if description == ALERT_CLOSE_NOTIFY {
            self.peer_closed = true;
            return Ok(Opened::Closed { len });
        }
        // Warnings do not end the session: in TLS 1.2 any, in TLS 1.3 user_canceled (which a
        // close_notify follows).
        if level == ALERT_LEVEL_WARNING && (!self.tls13 || description == ALERT_USER_CANCELED) {
            self.count_without_data()?;
            return Ok(Opened::Control { len });
        }
        Err(Error::AlertReceived(AlertDescription::from(description)))
    }

    /// Handshake messages after the handshake: TLS 1.3 session tickets and key updates; a TLS
    /// 1.2 HelloRequest (renegotiation is not supported and may be ignored, RFC 5246 §7.4.1.1).
    fn post_handshake(&mut self, mut messages: &[u8]) -> Result<(), Error> {
        while !messages.is_empty() {
            let &[kind, a, b, c, ref rest @ ..] = messages else {
                return Err(fragmented());
            };
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            let Some(body) = rest.get(..len) else {
                return Err(fragmented());
            };
            match (self.tls13, kind) {
                (true, HANDSHAKE_NEW_SESSION_TICKET) => match &mut self.kernel {
                    Kernel::Client(k) => k.handle_new_session_ticket(body)?,
                    Kernel::Server(_) => {
                        return Err(Error::General("a TLS client sent a session ticket".into()))
                    }
                },
                (true, HANDSHAKE_KEY_UPDATE) => {
                    let &[requested] = body else {
                        return Err(Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate));
                    };
                    if requested > 1 {
                        return Err(Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate));
                    }
                    // New keys start with the next record: nothing may follow in this one.
                    if rest.len() > len {
                        return Err(Error::General(
                            "TLS KeyUpdate not at the end of its record".into(),
                        ));
                    }
                    self.rx = Keys::new(self.kernel.update_rx()?)?;
                    self.owe_key_update |= requested == 1;
                }
                (false, HANDSHAKE_HELLO_REQUEST) if matches!(self.kernel, Kernel::Client(_)) => {}
                _ => {
                    return Err(Error::General(format!(
                        "unexpected TLS handshake message {kind} after the handshake"
                    )))
                }
            }
            messages = &rest[len..];
        }
        Ok(())
    }

    /// Appends records carrying up to [`MAX_PLAINTEXT`] bytes of `plaintext` to `out` (after
    /// any key update the session owes); returns how many bytes of `plaintext` it took.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        if self.closed {
            return Err(Error::General("TLS write after close_notify".into()));
        }
        if self.tx.seq >= self.tx_limit.saturating_sub(KEY_UPDATE_MARGIN) {
            if !self.tls13 {
                return Err(Error::General(
                    "TLS 1.2 session reached its cipher's confidentiality limit".into(),
                ));
            }
            self.owe_key_update = true;
        }
        self.seal_owed(out)?;
        let take = plaintext.len().min(MAX_PLAINTEXT);
        self.seal_record(CONTENT_APPLICATION_DATA, &plaintext[..take], out)?;
        Ok(take)
    }

    /// Appends the key update the session owes, if any, and switches to the next keys.
    pub fn seal_owed(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.owe_key_update && !self.closed {
            self.owe_key_update = false;
            // update_not_requested: we answer (or refresh on our own); the peer need not.
            self.seal_record(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0], out)?;
            self.tx = Keys::new(self.kernel.update_tx()?)?;
        }
        Ok(())
    }

    /// Appends a close_notify alert; nothing is sealed after it.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.seal_owed(out)?;
        self.closed = true;
        self.seal_record(
            CONTENT_ALERT,
            &[ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY],
            out,
        )
    }

    /// Appends the fatal alert that tells the peer why the session ends with `error` (none
    /// for an alert the peer sent); nothing is sealed after it. Best effort: a failure to seal
    /// only means the peer sees the connection close without a reason.
    pub fn seal_fatal_alert(&mut self, error: &Error, out: &mut Vec<u8>) {
        let description = match error {
            Error::AlertReceived(_) => return,
            Error::DecryptError => ALERT_BAD_RECORD_MAC,
            Error::InvalidMessage(InvalidMessage::MessageTooLarge) => ALERT_RECORD_OVERFLOW,
            Error::InvalidMessage(_) => ALERT_DECODE_ERROR,
            _ => ALERT_UNEXPECTED_MESSAGE,
        };
        if !self.closed {
            self.closed = true;
            let _ = self.seal_record(CONTENT_ALERT, &[ALERT_LEVEL_FATAL, description], out);
        }
    }

    fn seal_record(
        &mut self,
        content_type: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = out.len();
        let nonce = self.tx.nonce();
        let (outer_type, body_start, body_len) = if self.tls13 {
            (
                CONTENT_APPLICATION_DATA,
                start + HEADER_LEN,
                payload.len() + 1,
            )
        } else if self.explicit_nonce {
            let body_start = start + HEADER_LEN + EXPLICIT_NONCE_LEN;
            (content_type, body_start, payload.len())
        } else {
            (content_type, start + HEADER_LEN, payload.len())
        };
        let record_len = body_start - start - HEADER_LEN + body_len + TAG_LEN;
        let [hi, lo] = (record_len as u16).to_be_bytes();
        out.extend_from_slice(&[outer_type, 3, 3, hi, lo]);
        if !self.tls13 && self.explicit_nonce {
            out.extend_from_slice(&nonce[4..]);
        }
        out.extend_from_slice(payload);
        let mut aad = [0u8; 13];
        let aad_len = if self.tls13 {
            out.push(content_type);
            aad[..HEADER_LEN].copy_from_slice(&out[start..start + HEADER_LEN]);
            HEADER_LEN
        } else {
            aad = tls12_aad(self.tx.seq, content_type, payload.len());
            aad.len()
        };
        let tag = self
            .tx
            .cipher()?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..aad_len]),
                &mut out[body_start..],
            )
            .map_err(|_| Error::EncryptError)?;
        out.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
        Ok(())
    }
}

/// TLS 1.2 additional data: sequence number, type, version, plaintext length (RFC 5246 §6.2.3.3).
fn tls12_aad(seq: u64, content_type: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&[3, 3]);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

fn fragmented() -> Error {
    Error::General("post-handshake TLS message split across records (not supported)".into())
}
