//! Sessions (rustls' unbuffered connection in pooled buffers) against rustls' buffered
//! connection, in memory: every cipher suite of TLS 1.3 and TLS 1.2
//! both ways, as server and as client, key updates asked for by the peer, session tickets,
//! application data coalesced with the handshake's last flight, close_notify, and a tampered
//! record.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConfig, Connection, ServerConfig, SupportedProtocolVersion};

use super::{Handshake, Read, Session, TlsError, MAX_RECORD};

use sallyport_kit::pki::Pki;

fn provider(suite: CipherSuite) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    assert_eq!(provider.cipher_suites.len(), 1, "{suite:?}");
    Arc::new(provider)
}

fn version(suite: CipherSuite) -> &'static SupportedProtocolVersion {
    if format!("{suite:?}").starts_with("TLS13") {
        &rustls::version::TLS13
    } else {
        &rustls::version::TLS12
    }
}

fn server_config(pki: &Pki, suite: CipherSuite) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(&[version(suite)])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server.cert.clone()], pki.server.key_der())
            .unwrap(),
    )
}

fn client_config(pki: &Pki, suite: CipherSuite) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der()).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider(suite))
            .with_protocol_versions(&[version(suite)])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// Gives `bytes` to the rustls peer, keeping its plaintext in `got`.
fn feed_peer(peer: &mut Connection, mut bytes: &[u8], got: &mut Vec<u8>) {
    while !bytes.is_empty() {
        peer.read_tls(&mut bytes).unwrap();
        peer.process_new_packets().unwrap();
        drain_peer(peer, got);
    }
}

fn drain_peer(peer: &mut Connection, got: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match peer.reader().read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
    }
}

fn peer_output(peer: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while peer.wants_write() {
        peer.write_tls(&mut out).unwrap();
    }
    out
}

/// Runs `ours` against `peer` until both are done; returns our session.
fn handshake(mut ours: Handshake, peer: &mut Connection) -> Session {
    let mut early = Vec::new();
    for _ in 0..20 {
        let from_peer = peer_output(peer);
        ours.received(&from_peer);
        let done = ours.advance().unwrap();
        let out = ours.outgoing().to_vec();
        ours.sent(out.len());
        feed_peer(peer, &out, &mut early);
        if done && !peer.is_handshaking() {
            assert!(early.is_empty());
            return ours.finish().unwrap();
        }
    }
    panic!("handshake did not finish");
}

/// Our server and a rustls client, handshake done.
fn server_pair(pki: &Pki, suite: CipherSuite) -> (Session, Connection) {
    let mut peer: Connection = rustls::ClientConnection::new(client_config(pki, suite), name())
        .unwrap()
        .into();
    let session = handshake(
        Handshake::server(server_config(pki, suite)).unwrap(),
        &mut peer,
    );
    (session, peer)
}

/// Our server's flight in answer to the peer's ClientHello (taken from `ours`).
fn answer_client_hello(ours: &mut Handshake, peer: &mut Connection) -> Vec<u8> {
    ours.received(&peer_output(peer));
    assert!(!ours.advance().unwrap());
    let out = ours.outgoing().to_vec();
    ours.sent(out.len());
    out
}

/// Gives the session `bytes` as one socket read.
fn give(session: &mut Session, bytes: &[u8]) {
    let space = session.input_space();
    space[..bytes.len()].copy_from_slice(bytes);
    session.received(bytes.len());
}

/// Gives the session socket bytes in pieces of `piece` and collects its plaintext.
fn feed_session(session: &mut Session, bytes: &[u8], piece: usize, got: &mut Vec<u8>) {
    let mut buf = vec![0u8; 50_000];
    for chunk in bytes.chunks(piece.max(1)) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let space = session.input_space();
            let n = rest.len().min(space.len());
            space[..n].copy_from_slice(&rest[..n]);
            session.received(n);
            rest = &rest[n..];
            while let Read::Data(k) = session.read(&mut buf).unwrap() {
                got.extend_from_slice(&buf[..k]);
            }
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `data` from the session to the peer and other data back, checking both arrive intact.
fn exchange(session: &mut Session, peer: &mut Connection, len: usize) {
    let up = pattern(len, 7);
    let mut got = Vec::new();
    let mut off = 0;
    while off < up.len() {
        off += session.write(&up[off..]).unwrap();
        let out = session.output().to_vec();
        session.sent(out.len());
        feed_peer(peer, &out, &mut got);
    }
    assert!(
        got == up,
        "peer got {} of {} bytes intact",
        got.len(),
        up.len()
    );

    let down = pattern(len, 99);
    let mut wire = Vec::new();
    for chunk in down.chunks(10_000) {
        peer.writer().write_all(chunk).unwrap();
        wire.extend_from_slice(&peer_output(peer));
    }
    let mut back = Vec::new();
    feed_session(session, &wire, 777, &mut back);
    assert!(
        back == down,
        "session got {} of {} bytes intact",
        back.len(),
        down.len()
    );
}

const SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

#[test]
fn every_suite_both_ways_as_server_and_as_client() {
    let pki = Pki::localhost();
    for suite in SUITES {
        // Our server, a rustls client.
        let mut peer: Connection =
            rustls::ClientConnection::new(client_config(&pki, suite), name())
                .unwrap()
                .into();
        let ours = Handshake::server(server_config(&pki, suite)).unwrap();
        let mut session = handshake(ours, &mut peer);
        assert_eq!(
            session.is_tls13(),
            format!("{suite:?}").starts_with("TLS13")
        );
        exchange(&mut session, &mut peer, 100_000);

        // Our client, a rustls server (which sends session tickets under TLS 1.3).
        let mut peer: Connection = rustls::ServerConnection::new(server_config(&pki, suite))
            .unwrap()
            .into();
        let ours = Handshake::client(client_config(&pki, suite), name()).unwrap();
        let mut session = handshake(ours, &mut peer);
        exchange(&mut session, &mut peer, 70_000);
        exchange(&mut session, &mut peer, 1);
    }
}

#[test]
fn key_update_asked_for_by_the_peer_is_followed_and_answered() {
    let pki = Pki::localhost();
    let suite = CipherSuite::TLS13_AES_128_GCM_SHA256;
    let (mut session, mut peer) = server_pair(&pki, suite);
    exchange(&mut session, &mut peer, 20_000);
    for _ in 0..3 {
        // The peer moves to new keys and asks us to do the same: our answer goes out with our
        // next records, which the peer can only read under its new receive keys.
        peer.refresh_traffic_keys().unwrap();
        exchange_peer_first(&mut session, &mut peer, 40_000);
    }
}

/// As [`exchange`], the peer's data first (so its key update arrives before ours goes out).
fn exchange_peer_first(session: &mut Session, peer: &mut Connection, len: usize) {
    let down = pattern(len, 3);
    peer.writer().write_all(&down).unwrap();
    let wire = peer_output(peer);
    let mut back = Vec::new();
    feed_session(session, &wire, 4096, &mut back);
    assert!(back == down);
    // The answer is owed, not sent yet: it goes out in front of our next record.
    assert!(!session.wants_write());
    exchange(session, peer, len);
}

#[test]
fn data_in_the_same_flight_as_the_finished_message_comes_first() {
    let pki = Pki::localhost();
    let suite = CipherSuite::TLS13_AES_256_GCM_SHA384;
    let mut peer: Connection = rustls::ClientConnection::new(client_config(&pki, suite), name())
        .unwrap()
        .into();
    let mut ours = Handshake::server(server_config(&pki, suite)).unwrap();
    let out = answer_client_hello(&mut ours, &mut peer);
    let mut nothing = Vec::new();
    feed_peer(&mut peer, &out, &mut nothing);
    // The client's Finished, its first bytes and a key update asking for ours, one buffer:
    // the session takes over right after the Finished, in step with the peer.
    peer.writer().write_all(b"first bytes").unwrap();
    peer.refresh_traffic_keys().unwrap();
    ours.received(&peer_output(&mut peer));
    assert!(ours.advance().unwrap());
    let mut session = ours.finish().unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(session.read(&mut buf).unwrap(), Read::Data(11));
    assert_eq!(&buf[..11], b"first bytes");
    assert_eq!(session.read(&mut buf).unwrap(), Read::NeedInput);
    // Our answer goes first, then data the peer reads under its new keys.
    exchange(&mut session, &mut peer, 30_000);
}

#[test]
fn a_quiet_session_holds_no_buffers() {
    let pki = Pki::localhost();
    let (mut session, mut peer) = server_pair(&pki, CipherSuite::TLS13_AES_128_GCM_SHA256);
    exchange(&mut session, &mut peer, 100_000);
    assert!(session.rx.is_empty(), "receive buffer back in the pool");
    assert_eq!(session.tx.capacity(), 0, "send buffer back in the pool");
    // And they come back when bytes do.
    exchange(&mut session, &mut peer, 50_000);
}

#[test]
fn a_slow_reader_never_grows_the_send_buffer() {
    let pki = Pki::localhost();
    let (mut session, _peer) = server_pair(&pki, CipherSuite::TLS13_AES_128_GCM_SHA256);
    let data = pattern(100_000, 5);
    for _ in 0..500 {
        session.write(&data).unwrap();
        // The socket takes a little each time.
        session.sent(session.output().len().min(30_000));
        assert!(session.output().len() <= 64 * 1024 + 2 * MAX_RECORD);
        assert!(session.tx.len() <= 64 * 1024 + 2 * MAX_RECORD);
    }
}

#[test]
fn a_flood_of_records_without_data_ends_the_session_without_output() {
    let pki = Pki::localhost();
    let (mut session, mut peer) = server_pair(&pki, CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut wire = Vec::new();
    for _ in 0..40 {
        peer.refresh_traffic_keys().unwrap();
        peer.writer().write_all(b"").unwrap();
        // rustls sends the key update with its next write; an empty flush carries it.
        peer.writer().flush().unwrap();
        wire.extend_from_slice(&peer_output(&mut peer));
    }
    let mut buf = vec![0u8; 4096];
    give(&mut session, &wire);
    let e = session.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e,
            rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::TooManyKeyUpdateRequests)
        ),
        "{e}"
    );
    // No key update answers piled up; only the fatal alert that says why.
    assert!(session.output().len() < 64, "{}", session.output().len());
}

#[test]
fn nothing_is_sealed_after_close_notify() {
    let pki = Pki::localhost();
    let (mut session, mut peer) = server_pair(&pki, CipherSuite::TLS13_AES_128_GCM_SHA256);
    session.close().unwrap();
    let closing = session.output().len();
    peer.refresh_traffic_keys().unwrap();
    peer.writer().write_all(b"after our close").unwrap();
    let wire = peer_output(&mut peer);
    let mut got = Vec::new();
    feed_session(&mut session, &wire, wire.len(), &mut got);
    assert_eq!(got, b"after our close");
    assert_eq!(
        session.output().len(),
        closing,
        "no key update after close_notify"
    );
    assert!(session.write(b"more").is_err());
}

#[test]
fn a_record_cut_short_by_the_end_of_the_transport_is_an_error() {
    let pki = Pki::localhost();
    let (mut session, mut peer) = server_pair(&pki, CipherSuite::TLS13_AES_128_GCM_SHA256);
    peer.writer().write_all(b"whole").unwrap();
    let mut wire = peer_output(&mut peer);
    peer.writer().write_all(b"cut short").unwrap();
    let second = peer_output(&mut peer);
    wire.extend_from_slice(&second[..second.len() - 4]);
    give(&mut session, &wire);
    session.transport_ended();
    let mut buf = [0u8; 64];
    assert_eq!(session.read(&mut buf).unwrap(), Read::Data(5));
    assert!(session.read(&mut buf).is_err());
    // The end of the transport after whole records is the end of the stream.
    let (mut session, mut peer) = server_pair(&pki, CipherSuite::TLS13_AES_128_GCM_SHA256);
    peer.writer().write_all(b"whole").unwrap();
    let wire = peer_output(&mut peer);
    give(&mut session, &wire);
    session.transport_ended();
    assert_eq!(session.read(&mut buf).unwrap(), Read::Data(5));
    assert_eq!(session.read(&mut buf).unwrap(), Read::End);
}

#[test]
fn close_notify_ends_the_stream_and_is_sent_on_close() {
    let pki = Pki::localhost();
    let suite = CipherSuite::TLS13_AES_128_GCM_SHA256;
    let (mut session, mut peer) = server_pair(&pki, suite);
    peer.writer().write_all(b"last words").unwrap();
    peer.send_close_notify();
    let wire = peer_output(&mut peer);
    let mut got = Vec::new();
    feed_session(&mut session, &wire, wire.len(), &mut got);
    assert_eq!(got, b"last words");
    let mut buf = [0u8; 16];
    assert_eq!(session.read(&mut buf).unwrap(), Read::End);
    session.close().unwrap();
    let out = session.output().to_vec();
    let mut none = Vec::new();
    feed_peer(&mut peer, &out, &mut none);
    assert!(peer.process_new_packets().unwrap().peer_has_closed());
}

#[test]
fn a_tampered_record_is_an_error_not_data() {
    let pki = Pki::localhost();
    let suite = CipherSuite::TLS13_CHACHA20_POLY1305_SHA256;
    let (mut session, mut peer) = server_pair(&pki, suite);
    peer.writer().write_all(b"do not change me").unwrap();
    let mut wire = peer_output(&mut peer);
    let last = wire.len() - 3;
    wire[last] ^= 0x40;
    give(&mut session, &wire);
    let mut buf = [0u8; 64];
    assert_eq!(
        session.read(&mut buf).unwrap_err(),
        rustls::Error::DecryptError
    );
    // And it stays an error.
    assert_eq!(
        session.read(&mut buf).unwrap_err(),
        rustls::Error::DecryptError
    );
    // The peer is told why: bad_record_mac.
    let alert = session.output().to_vec();
    let mut rd = &alert[..];
    peer.read_tls(&mut rd).unwrap();
    let e = peer.process_new_packets().unwrap_err();
    assert_eq!(
        e,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
}

#[test]
fn a_failed_handshake_leaves_an_alert_for_the_peer() {
    let pki = Pki::localhost();
    let other = Pki::localhost();
    let suite = CipherSuite::TLS13_AES_128_GCM_SHA256;
    // The client trusts another CA: it rejects our certificate and tells us with an alert.
    let mut peer: Connection = rustls::ClientConnection::new(client_config(&other, suite), name())
        .unwrap()
        .into();
    let mut ours = Handshake::server(server_config(&pki, suite)).unwrap();
    let out = answer_client_hello(&mut ours, &mut peer);
    let mut rd = &out[..];
    peer.read_tls(&mut rd).unwrap();
    assert!(peer.process_new_packets().is_err());
    ours.received(&peer_output(&mut peer));
    let e = ours.advance().unwrap_err();
    assert!(matches!(e, rustls::Error::AlertReceived(_)), "{e:?}");

    // And our client, refusing the server, writes an alert for it.
    let mut peer: Connection = rustls::ServerConnection::new(server_config(&pki, suite))
        .unwrap()
        .into();
    let mut ours = Handshake::client(client_config(&other, suite), name()).unwrap();
    let hello = ours.outgoing().to_vec();
    ours.sent(hello.len());
    let mut none = Vec::new();
    feed_peer(&mut peer, &hello, &mut none);
    ours.received(&peer_output(&mut peer));
    assert!(ours.advance().is_err());
    assert!(!ours.outgoing().is_empty(), "an alert for the server");
}

#[test]
fn arbitrary_bytes_after_the_handshake_never_panic() {
    let pki = Pki::localhost();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for suite in SUITES {
        for round in 0..200 {
            let (mut session, mut peer) = server_pair(&pki, suite);
            // A header that claims any type and length, then noise; sometimes a real record
            // with one byte flipped.
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 300) as usize;
                let mut b = vec![(next() % 30) as u8 + 10, 3, 3];
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend((0..len).map(|_| next() as u8));
                b
            } else {
                peer.writer().write_all(&pattern(100, 1)).unwrap();
                let mut b = peer_output(&mut peer);
                let at = (next() as usize) % b.len();
                b[at] ^= 1 << (next() % 8);
                b
            };
            bytes.truncate(1 + (next() as usize) % bytes.len().max(1));
            let space = session.input_space();
            let n = bytes.len().min(space.len());
            space[..n].copy_from_slice(&bytes[..n]);
            session.received(n);
            let mut buf = [0u8; 256];
            for _ in 0..3 {
                let _ = session.read(&mut buf);
            }
        }
    }
}

/// Not a check: the cost of the records of one session pair, for tuning.md (`cargo test
/// --release -p sallyport-dataplane --lib record_cost -- --ignored --nocapture`; `PROBE_MIB`
/// sets the volume, `valgrind --tool=callgrind` counts instructions).
#[test]
#[ignore]
fn record_cost() {
    let pki = Pki::localhost();
    let suite = CipherSuite::TLS13_AES_128_GCM_SHA256;
    let mut client = Handshake::client(client_config(&pki, suite), name()).unwrap();
    let mut server = Handshake::server(server_config(&pki, suite)).unwrap();
    while !(client.is_done() && server.is_done()) {
        let out = client.outgoing().to_vec();
        client.sent(out.len());
        server.received(&out);
        server.advance().unwrap();
        let out = server.outgoing().to_vec();
        server.sent(out.len());
        client.received(&out);
        client.advance().unwrap();
    }
    let (mut client, mut server) = (client.finish().unwrap(), server.finish().unwrap());
    let mib: usize = std::env::var("PROBE_MIB").map_or(256, |v| v.parse().unwrap());
    let chunk = pattern(64 << 10, 1);
    let mut buf = vec![0u8; 256 << 10];
    let started = std::time::Instant::now();
    let mut moved = 0;
    while moved < mib << 20 {
        let mut off = 0;
        while off < chunk.len() {
            off += client.write(&chunk[off..]).unwrap();
            while client.wants_write() {
                let out = client.output();
                let space = server.input_space();
                let n = out.len().min(space.len());
                space[..n].copy_from_slice(&out[..n]);
                server.received(n);
                client.sent(n);
                while let Read::Data(k) = server.read(&mut buf).unwrap() {
                    moved += k;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "MiB={mib} seconds={secs:.3} GB/s={:.3}",
        moved as f64 / secs / 1e9
    );
}

#[test]
fn record_errors_hold_rustls_error_and_print_it_once() {
    use std::error::Error as _;
    let e = TlsError::Encode(rustls::unbuffered::EncodeError::AlreadyEncoded);
    assert_eq!(
        e.to_string(),
        "rustls could not encode a TLS record: cannot encode, data has already been encoded"
    );
    // In the text, so not again as source().
    assert!(e.source().is_none());
    let e = TlsError::Encrypt(rustls::unbuffered::EncryptError::EncryptExhausted);
    assert_eq!(
        e.to_string(),
        "rustls could not encrypt a TLS record: encrypter has been exhausted"
    );
    assert!(matches!(
        e,
        TlsError::Encrypt(rustls::unbuffered::EncryptError::EncryptExhausted)
    ));
    assert!(e.source().is_none());
}
