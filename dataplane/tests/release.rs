//! `Dataplane::release_reverse`: the parked reverse legs of one reverse pool are closed with a
//! FIN on every worker and each is reported `Released`; another pool's legs and legs parked
//! afterwards stay. Real sockets on 127.0.0.1, two workers.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::prepared_pair;
use sallyport_dataplane::{
    Dataplane, OwnedConn, RelayMode, ReverseEvent, ReverseEvents, ReverseIndex, ReverseOutcome,
};

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn start_with_events(workers: usize) -> (Dataplane, mpsc::Receiver<ReverseEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let events: ReverseEvents = Arc::new(move |event| {
        let _ = tx.lock().unwrap().send(event);
    });
    (
        common::start(workers, RelayMode::Copy, Vec::new(), Some(events)),
        rx,
    )
}

/// Parks one leg of `pool`; returns the DMZ's end.
fn park(dp: &Dataplane, pool: usize) -> TcpStream {
    let (leg, dmz) = prepared_pair();
    let target = "127.0.0.1:9".parse().unwrap();
    dp.park_reverse(
        ReverseIndex(pool),
        OwnedConn::new(leg, Vec::new()),
        common::backend(target, Duration::from_secs(1), None),
        None,
    )
    .unwrap();
    dmz
}

/// The DMZ's end reads a clean EOF (FIN, not a reset) within `EVENT_TIMEOUT`.
fn assert_fin(dmz: &mut TcpStream) {
    dmz.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    match dmz.read(&mut buf) {
        Ok(0) => {}
        other => panic!("expected EOF on the DMZ's end, got {other:?}"),
    }
}

#[test]
fn release_closes_one_pools_parked_legs_on_every_worker() {
    let (dp, events) = start_with_events(2);
    // Round-robin parking: four legs of pool 0 land on both workers, one of pool 1 too.
    let mut released: Vec<TcpStream> = (0..4).map(|_| park(&dp, 0)).collect();
    let mut kept = park(&dp, 1);
    assert_eq!(dp.release_reverse(ReverseIndex(0)), 0, "no queue is full");
    for _ in 0..4 {
        let event = events.recv_timeout(EVENT_TIMEOUT).unwrap();
        assert_eq!(
            event,
            ReverseEvent {
                service: ReverseIndex(0),
                outcome: ReverseOutcome::Released
            }
        );
    }
    for dmz in &mut released {
        assert_fin(dmz);
    }
    // Pool 1's leg is still parked: nothing was reported and nothing arrives on it.
    assert!(events.recv_timeout(Duration::from_millis(200)).is_err());
    kept.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let err = kept.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");

    // A leg parked after the release is not released by it.
    let mut later = park(&dp, 0);
    assert!(events.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(dp.release_reverse(ReverseIndex(0)), 0);
    assert_eq!(
        events.recv_timeout(EVENT_TIMEOUT).unwrap().outcome,
        ReverseOutcome::Released
    );
    assert_fin(&mut later);
}
