//! HTTP/1.1 response parsing: a typical 200 head, and a chunked body through `BodyDecoder`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringwatch::model::Method;
use ringwatch::probe::http1::{parse_head, BodyDecoder, Framing};

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Sun, 22 Nov 2026 17:00:00 GMT\r\n\
Server: nginx/1.24.0\r\n\
Content-Type: application/json\r\n\
Content-Length: 27\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-store\r\n\
\r\n";

/// A 4 KiB body in 16 chunks of 256 bytes, then the terminating chunk.
fn chunked_body() -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..16 {
        v.extend_from_slice(b"100\r\n");
        v.extend_from_slice(&[b'x'; 256]);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_parse");
    g.throughput(Throughput::Bytes(HEAD.len() as u64));
    g.bench_function("parse_head_200", |b| {
        b.iter(|| parse_head(black_box(HEAD), 16 * 1024))
    });
    let body = chunked_body();
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("body_chunked_4k", |b| {
        b.iter(|| {
            let mut d = BodyDecoder::new(Framing::Chunked, 8);
            let mut seen = 0usize;
            let mut input: &[u8] = black_box(&body);
            // Bounded: every call consumes at least one byte or finishes the body.
            for _ in 0..body.len() {
                if d.is_done() || input.is_empty() {
                    break;
                }
                match d.feed(input, &mut |p: &[u8]| seen += p.len()) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => input = &input[n..],
                }
            }
            assert!(d.is_done());
            seen
        })
    });
    // Sanity: the framing the prober would pick for a chunked head.
    let head = parse_head(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        1024,
    )
    .ok()
    .flatten()
    .map(|(h, _)| h);
    assert_eq!(
        head.map(|h| Framing::of(&h, Method::Get)),
        Some(Framing::Chunked)
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
