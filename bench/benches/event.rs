//! Event serialization: one transition to JSON and its WebSocket frame, in one buffer.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringwatch::model::{ServiceId, Status, Transition, UnixMillis};
use ringwatch::pipeline::event::Event;

fn bench(c: &mut Criterion) {
    let t = Transition {
        seq: 123_456,
        service_id: ServiceId::from_raw(4242),
        service: "checkout-api-eu-west-1".to_string(),
        from: Status::Up,
        to: Status::Down,
        at: UnixMillis(1_795_000_000_000),
        latency: Duration::from_micros(12_345),
        status_code: Some(503),
        error: Some("unexpected status 503".to_string()),
    };
    let mut g = c.benchmark_group("event");
    g.bench_function("transition_json_and_frame", |b| {
        b.iter(|| Event::transition(black_box(&t)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
