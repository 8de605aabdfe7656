//! WebSocket frame encoding of a 200-byte text payload: the copy path (`encode`) and the
//! in-place path the event encoder uses (`frame_in_place`).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use ringwatch::wire::frame::{encode, frame_in_place, MAX_HEADER, OP_TEXT};

fn bench(c: &mut Criterion) {
    let payload = vec![b'a'; 200];
    let mut g = c.benchmark_group("ws_frame");
    g.bench_function("encode_text_200", |b| {
        b.iter(|| encode(OP_TEXT, black_box(&payload)))
    });
    g.bench_function("frame_in_place_text_200", |b| {
        b.iter_batched(
            || {
                let mut v = vec![0u8; MAX_HEADER];
                v.extend_from_slice(&payload);
                v
            },
            |v| frame_in_place(v, OP_TEXT),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
