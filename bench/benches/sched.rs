//! Scheduler insert and pop at 1,000,000 planned probes.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ringwatch::pipeline::sched::{Due, Scheduler};
use ringwatch::rt::table::SlotId;

fn filled(n: u64, t0: Instant) -> Scheduler {
    let mut s = Scheduler::new();
    for i in 0..n {
        s.push(Due {
            at: t0 + Duration::from_micros(i * 7919 % 60_000_000),
            slot: SlotId::new(i as u32),
            generation: 0,
        });
    }
    s
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut g = c.benchmark_group("sched_1m");
    g.sample_size(20);
    g.bench_function("push_pop_steady_state", |b| {
        let mut s = filled(1_000_000, t0);
        let mut i = 1_000_000u64;
        b.iter(|| {
            // Pop the earliest and re-plan it one interval later: the steady-state operation.
            let far = t0 + Duration::from_secs(3600);
            if let Some(d) = s.pop_due(far) {
                i += 1;
                s.push(Due {
                    at: d.at + Duration::from_secs(60),
                    ..d
                });
            }
        })
    });
    g.bench_function("fill_1m", |b| {
        b.iter_batched(|| (), |_| filled(1_000_000, t0), BatchSize::PerIteration)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
