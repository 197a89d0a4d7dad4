//! `mdbus streams`: a lossless stream lists its registered subscribers with their positions
//! and how far each is behind the publisher.

use std::process::Command;

use mdbus_bus::{Bus, Mode, StreamConfig, SubscribeOptions};

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

#[test]
fn subscribers_are_listed_with_their_lag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus = Bus::with_root(dir.path()).expect("bus");
    let config = StreamConfig {
        mode: Mode::Lossless,
        ..StreamConfig::default()
    };
    let mut publisher = bus.publisher("quotes", &config).expect("publisher");
    let options = SubscribeOptions {
        lossless: true,
        ..SubscribeOptions::default()
    };
    let mut reader = bus.subscriber("quotes", &options).expect("subscriber");
    let _idle = bus
        .subscriber("quotes", &options)
        .expect("second subscriber");
    for i in 0..10u64 {
        publisher.publish(7, &i.to_le_bytes()).expect("publish");
    }
    // The first subscriber reads 4 records; the second reads none.
    for _ in 0..4 {
        assert!(reader.poll(|_| {}).expect("poll"));
    }

    let out = Command::new(MDBUS)
        .args(["streams", "--json", "--root"])
        .arg(dir.path())
        .output()
        .expect("run mdbus streams");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text.lines().next().expect("one stream");
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["stream"], "quotes");
    assert_eq!(v["mode"], "lossless");
    assert_eq!(v["state"], "live");
    assert_eq!(v["pid"], std::process::id());
    let committed = v["committed"].as_u64().expect("committed");
    assert!(committed > 0, "{v}");
    let subs = v["subscribers"].as_array().expect("subscribers");
    assert_eq!(subs.len(), 2, "{v}");
    let mut lags: Vec<u64> = subs.iter().map(|s| s["lag"].as_u64().unwrap()).collect();
    lags.sort_unstable();
    assert_eq!(
        lags[1], committed,
        "the idle subscriber has read nothing: {v}"
    );
    assert!(
        lags[0] > 0 && lags[0] < committed,
        "the reader is part way: {v}"
    );
    for s in subs {
        assert_eq!(s["pid"], std::process::id(), "{v}");
        assert_eq!(s["alive"], true, "{v}");
        assert_eq!(
            s["position"].as_u64().unwrap() + s["lag"].as_u64().unwrap(),
            committed,
            "{v}"
        );
    }

    let out = Command::new(MDBUS)
        .args(["streams", "--root"])
        .arg(dir.path())
        .output()
        .expect("run mdbus streams");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("subscriber slot").count(), 2, "{text}");
    assert!(text.contains("lossless"), "{text}");
}
