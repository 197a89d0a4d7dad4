//! ITCH 5.0 decode throughput (filled in below).
fn main() {}
