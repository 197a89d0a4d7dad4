//! Runs the built `mdbus` binary: `demo` (text and JSON), `replay --book-summary` on the real
//! AAPL session, and a `replay` -> `record` -> `replay` round trip. No timing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn mdbus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdbus"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"))
}

/// Runs mdbus and returns its stdout, failing with its stderr if it failed.
fn ok(args: &[&str]) -> String {
    let out = mdbus(args);
    assert!(
        out.status.success(),
        "mdbus {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn aapl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The reference reading of the AAPL session, on a `--book-summary` object.
fn assert_reference(v: &Value) {
    assert_eq!(v["messages"], 10_000, "{v}");
    assert_eq!(v["gaps"], 0);
    assert_eq!(v["counts"]["A"], 4_758);
    assert_eq!(v["counts"]["E"], 849);
    assert_eq!(v["counts"]["P"], 240);
    let b = &v["books"]["13"];
    assert_eq!(b["best_bid"], 3_201_400);
    assert_eq!(b["bid_size"], 25);
    assert_eq!(b["best_ask"], 3_203_000);
    assert_eq!(b["ask_size"], 100);
    assert_eq!(b["resting_orders"], 215);
    assert_eq!(b["executed_shares"], 81_556);
    assert_eq!(b["prints"], 1_089);
}

#[test]
fn demo_shows_the_final_book_and_the_latency_percentiles() {
    let text = ok(&["demo", "--rate", "500000"]);
    for needle in [
        "AAPL (locate 13)",
        "bid 320.1400 x 25",
        "ask 320.3000 x 100",
        "215 resting orders",
        "81,556 shares executed in 1,089 prints",
        "matches the reference",
        "tick-to-strategy latency",
        "p50 ",
        "p99 ",
        "p99.9 ",
        "max ",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(text.lines().count() <= 24, "more than a screen:\n{text}");
}

#[test]
fn demo_json_carries_every_stage() {
    let v = demo_json(&[]);
    // With no --threading, each stage gets a thread of its own when there are three cpus for
    // them; with fewer, the strategy runs on the feed handler's thread.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected = if cpus >= 3 {
        "dedicated"
    } else {
        "strategy-on-feed"
    };
    assert_eq!(v["placement"]["threading"], expected, "{cpus} cpus");
    assert_eq!(v["placement"]["threading_chosen"], true);
    check_stages(&v);
    let text = ok(&["demo"]);
    assert_eq!(
        text.contains("fewer than three cpus: the strategy runs on the feed handler's thread"),
        cpus < 3,
        "{text}"
    );
    let v = demo_json(&["--threading", "dedicated"]);
    assert_eq!(v["placement"]["threading"], "dedicated");
    assert_eq!(v["placement"]["threading_chosen"], false);
}

/// The two-thread arrangements (the book builder and the strategy on one thread in turns;
/// the strategy on the feed handler's thread in its waits; the books built on the feed
/// handler's thread): the same messages, books, prints, signals and samples as on their own
/// threads, and the stage that shares a thread placed on the cpu of the one it shares.
#[test]
fn demo_two_thread_arrangements_give_the_same_results() {
    let dedicated = demo_json(&["--threading", "dedicated"]);
    check_stages(&dedicated);
    for (threading, (guest, host), says) in [
        ("shared", ("strategy_cpu", "book_cpu"), "share one thread"),
        (
            "strategy-on-feed",
            ("strategy_cpu", "feed_cpu"),
            "on the feed handler's thread, in its waits",
        ),
        (
            "book-on-feed",
            ("book_cpu", "feed_cpu"),
            "books are built on the feed handler's thread",
        ),
        (
            "split-books",
            ("strategy_cpu", "book_cpu"),
            "books are split by instrument",
        ),
    ] {
        for rate in ["0", "500000"] {
            let v: Value = serde_json::from_str(&ok(&[
                "demo",
                "--rate",
                rate,
                "--threading",
                threading,
                "--json",
            ]))
            .expect("JSON");
            assert_eq!(v["placement"]["threading"], threading, "{v}");
            // The strategy reads its two streams merged in source order: the same signals,
            // in the same order, whatever the threads' timing.
            assert_eq!(v["strategy"]["signals"], dedicated["strategy"]["signals"]);
            assert_eq!(
                v["strategy"]["first_signals"],
                dedicated["strategy"]["first_signals"]
            );
            assert_eq!(v["placement"][guest], v["placement"][host], "{v}");
            // The same books and the same envelopes out of them.
            assert_eq!(v["final_book"], dedicated["final_book"]);
            for k in [
                "messages",
                "book_events",
                "bbos_published",
                "levels_published",
                "trades_published",
                "crosses_forwarded",
                "unpriced_prints",
                "non_printable",
                "ended",
            ] {
                assert_eq!(v["book"][k], dedicated["book"][k], "{threading}: book.{k}");
            }
            for k in ["bbo_updates", "trades", "gaps", "microprice", "flow"] {
                assert_eq!(
                    v["strategy"][k], dedicated["strategy"][k],
                    "{threading}: strategy.{k}"
                );
            }
            check_stages(&v);
        }
        let text = ok(&["demo", "--threading", threading]);
        assert!(text.contains(says), "{text}");
    }
}

/// `mdbus demo --rate 0 --json` with `args` added.
fn demo_json(args: &[&str]) -> Value {
    let mut all = vec!["demo", "--rate", "0", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(&all)).expect("JSON")
}

fn check_stages(v: &Value) {
    assert_eq!(v["feed"]["published"], 10_000);
    assert_eq!(v["book"]["messages"], 10_000);
    assert_eq!(v["book"]["trades_published"], 1_089);
    assert_eq!(v["matches_reference"], true);
    assert_eq!(v["final_book"][0], 13);
    assert_eq!(v["final_book"][1], "AAPL");
    let bbo = v["book"]["bbos_published"].as_u64().unwrap();
    assert_eq!(v["strategy"]["bbo_updates"], bbo);
    assert_eq!(v["strategy"]["trades"], 1_089);
    // One latency sample per BBO update and trade the strategy read.
    assert_eq!(v["latency"]["samples"].as_u64(), Some(bbo + 1_089));
    let l = &v["latency"];
    let p = |k: &str| l[k].as_u64().unwrap_or_else(|| panic!("{k} in {l}"));
    assert!(p("min_ns") <= p("p50_ns") && p("p50_ns") <= p("p99_ns"));
    assert!(p("p99_ns") <= p("p999_ns") && p("p999_ns") <= p("max_ns"));
    // The floor beside it, measured in the same run between the feed's and strategy's cpus
    // (the book builder's when the strategy runs on the feed handler's thread).
    let placement = &v["placement"];
    let far = if placement["threading"] == "strategy-on-feed" {
        &placement["book_cpu"]
    } else {
        &placement["strategy_cpu"]
    };
    if placement["feed_cpu"] == *far {
        assert!(v["floor"].is_null(), "{v}");
    } else {
        assert_eq!(v["floor"]["samples"], 200_000, "{v}");
        assert!(v["floor"]["p50_ns"].as_u64().unwrap() <= v["floor"]["max_ns"].as_u64().unwrap());
    }
}

#[test]
fn replay_book_summary_matches_the_reference() {
    let root = tempfile::tempdir().unwrap();
    let out = ok(&[
        "replay",
        "--root",
        s(root.path()),
        "--book-summary",
        s(&aapl()),
    ]);
    assert_eq!(out.lines().count(), 1, "one JSON object:\n{out}");
    assert_reference(&serde_json::from_str(&out).expect("JSON"));
}

#[test]
fn replay_record_replay_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bus");
    let rec = dir.path().join("aapl.mdbrec");
    // The stream outlives its publisher: its ring retains the whole session for the recorder.
    ok(&[
        "replay",
        "--root",
        s(&root),
        "--feed",
        "aapl",
        "--book",
        s(&aapl()),
    ]);
    let line = ok(&[
        "record",
        "--root",
        s(&root),
        "--stream",
        "aapl",
        "--json",
        s(&rec),
    ]);
    let v: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["records"], 10_001, "{v}");
    assert_eq!(v["stop"], "EndOfSession");
    let out = ok(&[
        "replay",
        "--root",
        s(&root),
        "--feed",
        "again",
        "--json",
        "--book-summary",
        s(&rec),
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["format"], "recording");
    assert_eq!(v["published"], 10_000);
    assert_reference(&v["book_summary"]);
}

#[test]
fn replay_filters_and_reports_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = s(dir.path());
    // The session's messages are stamped 03:07 to 07:59 (exchange time).
    let out = ok(&[
        "replay",
        "--root",
        root,
        "--json",
        "--from",
        "04:00",
        "--to",
        "05:00",
        "--symbol",
        "AAPL",
        s(&aapl()),
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let published = v["published"].as_u64().unwrap();
    assert!(published > 0 && published < 10_000, "{v}");
    assert_eq!(v["unresolved_symbols"].as_array().map(Vec::len), Some(0));

    let missing = dir.path().join("missing.itch");
    let out = mdbus(&["replay", "--root", root, s(&missing)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.itch"), "{err}");

    let bad = mdbus(&["replay", "--root", root, "--speed", "fast", s(&aapl())]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fast"));

    // A truncated file: the offset is reported, the rest replayed, the exit is clean.
    let bytes = std::fs::read(aapl()).unwrap();
    let cut = dir.path().join("cut.itch");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let out = mdbus(&["replay", "--root", root, "--json", s(&cut)]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["published"], 9_999);
    assert!(v["truncated"]["offset"].as_u64().is_some(), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated record at offset"));
}

#[test]
fn demo_takes_its_cpus_from_a_tune_plan_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout.toml");
    ok(&[
        "tune",
        "plan",
        "--roles",
        "feed_handler,book_builder,strategy",
        "--out",
        s(&layout),
    ]);
    let plan = std::fs::read_to_string(&layout).unwrap();
    let v: Value = serde_json::from_str(&ok(&[
        "demo",
        "--rate",
        "0",
        "--json",
        "--layout",
        s(&layout),
    ]))
    .expect("JSON");
    assert_eq!(v["matches_reference"], true);
    // Each stage runs on the first core its role has in the layout.
    for (role, key) in [
        ("feed_handler", "feed_cpu"),
        ("book_builder", "book_cpu"),
        ("strategy", "strategy_cpu"),
    ] {
        let cpu = v["placement"][key].as_u64().unwrap();
        let section = plan
            .split(&format!("[roles.{role}]"))
            .nth(1)
            .unwrap_or_else(|| panic!("no [roles.{role}] in\n{plan}"));
        let cores_line = section.lines().find(|l| l.starts_with("cores")).unwrap();
        assert!(
            cores_line.contains(&format!("[{cpu}")),
            "{role} on cpu {cpu}, layout says {cores_line}"
        );
    }

    // A layout without one of the roles is a clear error naming it.
    let partial = dir.path().join("partial.toml");
    ok(&[
        "tune",
        "plan",
        "--roles",
        "feed_handler",
        "--out",
        s(&partial),
    ]);
    let out = mdbus(&["demo", "--layout", s(&partial)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("book_builder"), "{err}");
}

/// With neither `--cpus` nor a layout the demo runs where `mdbus tune plan` places the feed
/// handler, the book builder and the strategy on this host: the two agree on any number of cpus
/// (on two, the feed handler and the strategy share the isolated cpu, the book builder runs
/// beside the OS on the other).
#[test]
fn demo_runs_where_tune_plan_places_its_stages() {
    let plan: Value = serde_json::from_str(&ok(&[
        "tune",
        "plan",
        "--roles",
        "feed_handler,book_builder,strategy",
        "--json",
    ]))
    .expect("JSON");
    let v: Value = serde_json::from_str(&ok(&["demo", "--rate", "0", "--json"])).expect("JSON");
    assert_eq!(v["matches_reference"], true);
    assert_eq!(v["placement"]["planned"], true, "{}", v["placement"]);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    // The demo plans among the cpus it may use; compare where that is the whole host.
    if allowed == online.trim() {
        for (role, key) in [
            ("feed_handler", "feed_cpu"),
            ("book_builder", "book_cpu"),
            ("strategy", "strategy_cpu"),
        ] {
            assert_eq!(
                v["placement"][key], plan["roles"][role]["cores"][0],
                "{role}: demo {} / plan {}",
                v["placement"], plan["roles"]
            );
        }
    }
}
