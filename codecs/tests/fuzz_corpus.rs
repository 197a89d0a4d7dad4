//! The fuzz targets' seed corpora (`fuzz/corpus-seed/<target>/`) as regression tests: every
//! entry function runs over every seed, every prefix of it, and every single-byte change of
//! its first 64 bytes. Inputs that once made a target fail belong in the seed corpus.

#[path = "../fuzz/src/entries.rs"]
mod entries;

use std::path::Path;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus-seed")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read seed"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn run(target: &str, entry: fn(&[u8])) {
    for seed in seeds(target) {
        entry(&seed);
        for k in 0..seed.len() {
            entry(&seed[..k]);
        }
        let mut m = seed.clone();
        for i in 0..m.len().min(64) {
            for flip in [0x01, 0x80, 0xff] {
                m[i] ^= flip;
                entry(&m);
                m[i] ^= flip;
            }
        }
    }
}

#[test]
fn itch_decode() {
    run("itch_decode", entries::itch_decode);
}

#[test]
fn moldudp64_parse() {
    run("moldudp64_parse", entries::moldudp64_parse);
}

#[test]
fn soupbintcp_decode() {
    run("soupbintcp_decode", entries::soupbintcp_decode);
}

#[test]
fn capture_read() {
    run("capture_read", entries::capture_read);
}

#[test]
fn fb_verify() {
    run("fb_verify", entries::fb_verify);
}

#[test]
fn sequencer() {
    run("sequencer", entries::sequencer);
}

#[test]
fn retransmit() {
    run("retransmit", entries::retransmit);
}

#[test]
fn iex_tp() {
    run("iex_tp", entries::iex_tp);
}

#[test]
fn iex_tops() {
    run("iex_tops", entries::iex_tops);
}

#[test]
fn iex_deep() {
    run("iex_deep", entries::iex_deep);
}
