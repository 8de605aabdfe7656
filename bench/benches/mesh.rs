//! Ring mesh throughput: one producer thread to one consumer runtime, batched drains.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringwatch::rt::mesh::{From, Mesh};

const N: u64 = 1_000_000;

fn one_way(mesh: &Arc<Mesh<u64>>) {
    let producer = {
        let mesh = mesh.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                let mut m = i;
                while let Err(back) = mesh.send(From::Shard(0), 1, m) {
                    m = back;
                    std::hint::spin_loop();
                }
            }
        })
    };
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut got = 0u64;
        let mut buf = Vec::with_capacity(256);
        while got < N {
            buf.clear();
            got += mesh.recv_batch(1, &mut buf, 256).await as u64;
        }
    });
    producer.join().expect("producer");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    let mesh = Mesh::new(2, 4096);
    g.bench_function("one_way_1m_msgs", |b| b.iter(|| one_way(&mesh)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
