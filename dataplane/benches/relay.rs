//! Relay engine micro-benchmark: one tunnel between two loopback socket pairs, a writer thread
//! pushing `msg` bytes at a time and a reader thread draining the far end, the tunnel pumped by
//! the bench thread after each readiness change (busy-pumped here, no ring). The buffered-copy
//! engine always runs beside splice so the two can be compared in one run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sallyport_dataplane::leg::Leg;
use sallyport_dataplane::metrics::{Side, WorkerStats};
use sallyport_dataplane::relay::{Engine, Tunnel, TunnelState};
use sallyport_dataplane::{pipe, prepare_stream, StreamOptions};

const TRANSFER: usize = 64 << 20;

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    (a, b)
}

/// Moves TRANSFER bytes client → server through one tunnel; returns the time taken.
fn transfer(splice: bool, msg: usize) -> Duration {
    let (mut client, leg0) = pair();
    let (leg1, mut server) = pair();
    for leg in [&leg0, &leg1] {
        prepare_stream(leg.as_fd(), StreamOptions::default()).expect("prepare");
    }
    let engine = || {
        if splice {
            Engine::splice(pipe(1 << 20).expect("pipe"))
        } else {
            Engine::copy(vec![0u8; 64 << 10].into_boxed_slice())
        }
    };
    let stats = WorkerStats::new(0);
    let mut tunnel = Tunnel::new(
        [
            Leg::plain(OwnedFd::from(leg0)),
            Leg::plain(OwnedFd::from(leg1)),
        ],
        [Vec::new(), Vec::new()],
        [engine(), engine()],
    );
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; msg];
        let mut sent = 0;
        while sent < TRANSFER {
            client.write_all(&chunk).expect("write");
            sent += msg;
        }
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
    });
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        server
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        got
    });
    loop {
        let up = tunnel.on_ready(Side::Client, None, &stats).expect("relay");
        let down = tunnel.on_ready(Side::Target, None, &stats).expect("relay");
        if up == TunnelState::Finished || down == TunnelState::Finished {
            break;
        }
        std::thread::yield_now();
    }
    writer.join().expect("writer");
    assert_eq!(reader.join().expect("reader"), TRANSFER);
    start.elapsed()
}

fn relay(c: &mut Criterion) {
    for msg in [16 << 10, 256 << 10] {
        let mut group = c.benchmark_group(format!("relay_busy_pump_msg_{}k", msg >> 10));
        group.throughput(Throughput::Bytes(TRANSFER as u64));
        group.sample_size(10);
        group.bench_function("splice_pipe_1m", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| transfer(true, msg)).sum())
        });
        group.bench_function("copy_buffer_64k", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| transfer(false, msg)).sum())
        });
        group.finish();
    }
}

criterion_group!(benches, relay);
criterion_main!(benches);
