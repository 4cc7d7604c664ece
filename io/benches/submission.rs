//! The per-operation cost of the io_uring submission path without a device: batches of no-op
//! requests through the calling thread's ring (push, one `io_uring_enter`, bulk reap).
//! Throughput is in elements, so criterion reports operations per second.

use bufpool_io::{EngineChoice, EngineKind, IoConfig, IoEngine};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn nop_batches(criterion: &mut Criterion) {
    let engine = IoEngine::new(IoConfig {
        engine: EngineChoice::Uring,
        ..IoConfig::default()
    })
    .expect("io_uring must be available for this bench");
    assert_eq!(engine.kind(), EngineKind::Uring);
    let mut group = criterion.benchmark_group("uring_nop");
    for batch in [1usize, 8, 32, 128] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(batch),
            &batch,
            |bencher, &batch| {
                bencher.iter(|| engine.nop_batch(batch).expect("nop batch"));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, nop_batches);
criterion_main!(benches);
