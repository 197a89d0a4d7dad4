//! `mdbus send` on a stream an earlier run closed says what it will do instead of sending
//! nothing in silence.

use std::path::Path;
use std::process::{Command, Output};

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

fn mdbus(args: &[&str], root: &Path) -> Output {
    Command::new(MDBUS)
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .expect("run mdbus")
}

#[test]
fn a_closed_stream_is_sent_from_oldest_or_refused_with_the_way_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let itch = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../codecs/testdata/itch/aapl-2020-01-30-10k.itch"
    );
    let out = mdbus(
        &["replay", itch, "--feed", "closed", "--no-progress"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let send = |start: &str, port: &str| {
        mdbus(
            &[
                "send",
                "closed",
                "--group",
                &format!("239.255.119.1:{port}"),
                "--interface",
                "127.0.0.1",
                "--linger-ms",
                "50",
                "--summary",
                "--start",
                start,
            ],
            dir.path(),
        )
    };
    let out = send("next", "31901");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("closed by its publisher"), "{err}");
    assert!(err.contains("--start oldest"), "{err}");

    let out = send("oldest", "31903");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sending what it retains"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    assert!(
        summary["counters"]["messages"].as_u64() >= Some(10_000),
        "{summary}"
    );
}
