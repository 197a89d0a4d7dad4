//! `mdbus replay` of IEX captures: the protocol judged by content or forced, the IEX
//! `--book-summary` JSON, and a capture of no known protocol refused with what it holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata")
        .join(rel)
}

fn mdbus(args: &[&str]) -> Output {
    Command::new(MDBUS)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn deep_plus_capture_prints_the_iex_book_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = testdata("iex/deepplus-all-message-types.pcap");
    let out = mdbus(&[
        "replay",
        "--root",
        s(dir.path()),
        "--book-summary",
        s(&file),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("iex-deep-plus"), "{stderr}");
    assert!(stderr.contains("restarted at 1 3 times"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["books", "counts", "gaps", "messages"]);
    assert_eq!(v["messages"], 211);
    for (sym, b) in v["books"].as_object().unwrap() {
        assert_eq!(sym.trim_end(), sym);
        let fields: Vec<&String> = b.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            [
                "ask_size",
                "best_ask",
                "best_bid",
                "bid_size",
                "prints",
                "traded_shares"
            ]
        );
    }
    // Forced to another protocol: its decoder refuses the order messages (counted), and
    // the disagreement is said.
    let out = mdbus(&[
        "replay",
        "--root",
        s(dir.path()),
        "--protocol",
        "iex-tops",
        "--book-summary",
        s(&file),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("5 undecodable messages"), "{stderr}");
    assert!(
        stderr.contains("say they carry DEEP+, read as TOPS"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["messages"], 206);
}

#[test]
fn a_capture_of_no_known_protocol_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // One UDP datagram of a Cboe PITCH sequenced unit, in a classic pcap.
    let mut payload = vec![42u8, 0, 1, 1, 0xe8, 3, 0, 0, 34, 0x37];
    payload.extend_from_slice(&[0x81; 32]);
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    frame.extend_from_slice(&u16::try_from(28 + payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 239, 9, 8, 7]);
    frame.extend_from_slice(&[0x13, 0x88, 0x75, 0x3a]);
    frame.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&payload);
    let mut pcap = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    pcap.extend_from_slice(&[
        2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ]);
    pcap.extend_from_slice(&[0; 8]);
    let n = u32::try_from(frame.len()).unwrap().to_le_bytes();
    pcap.extend_from_slice(&n);
    pcap.extend_from_slice(&n);
    pcap.extend_from_slice(&frame);
    let file = dir.path().join("pitch.pcap");
    std::fs::write(&file, pcap).unwrap();
    let out = mdbus(&["replay", "--root", s(dir.path()), s(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "no MoldUDP64 or IEX-TP packet in the first 1 datagrams: 1 UDP datagrams to 239.9.8.7:30010"
        ),
        "{stderr}"
    );
    let out = mdbus(&[
        "replay",
        "--root",
        s(dir.path()),
        "--protocol",
        "pitch",
        s(&file),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("iex-deep-plus"));
}
