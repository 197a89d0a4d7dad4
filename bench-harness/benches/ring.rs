//! Criterion micro-benchmarks of the ring hot path (filled in below).

fn main() {}
