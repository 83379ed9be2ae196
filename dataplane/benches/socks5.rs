//! SOCKS5 codec micro-benchmarks. Each group runs a `memcpy` of the same bytes beside the
//! parser as the baseline: a parser close to it costs about what touching the bytes costs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sallyport_dataplane::wire::socks5::{self, Command, Host};

fn bind_request() -> Vec<u8> {
    let mut out = Vec::new();
    socks5::encode_request(
        Command::Bind,
        &Host::Domain("echo-service".into()),
        0,
        &mut out,
    )
    .expect("valid request");
    out
}

fn parse(c: &mut Criterion) {
    let request = bind_request();
    let mut reply = Vec::new();
    socks5::encode_reply(0, "192.0.2.7:40000".parse().unwrap(), &mut reply);
    let mut group = c.benchmark_group("socks5_parse_bind_request_domain_12");
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("parse_request", |b| {
        b.iter(|| socks5::parse_request(black_box(&request)))
    });
    group.bench_function("baseline_memcpy", |b| {
        b.iter(|| black_box(&request).to_vec())
    });
    group.finish();

    let mut group = c.benchmark_group("socks5_parse_reply_ipv4");
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function("parse_reply", |b| {
        b.iter(|| socks5::parse_reply(black_box(&reply)))
    });
    group.bench_function("baseline_memcpy", |b| b.iter(|| black_box(&reply).to_vec()));
    group.finish();
}

fn encode(c: &mut Criterion) {
    let client = "198.51.100.9:51234".parse().unwrap();
    let mut group = c.benchmark_group("socks5_encode_second_reply_ipv4");
    let mut out = Vec::with_capacity(32);
    group.bench_function("encode_reply", |b| {
        b.iter(|| {
            out.clear();
            socks5::encode_reply(0, black_box(client), &mut out);
        })
    });
    let template = [5u8, 0, 0, 1, 198, 51, 100, 9, 0xc8, 0x02];
    group.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&template));
        })
    });
    group.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
