//! Runs `bench replay --input FILE` through its command-line arguments with tiny counts and
//! checks what it reports: the file's message count, and the `itch-book` row present when
//! the package is importable, absent with a note when not. No timing is asserted; the suite
//! does not need itch-book (`MDBUS_BENCH_PYTHON` picks the interpreter to check it with).

use std::path::Path;

use clap::Parser;
use mdbus_bench_harness::bench::{BenchArgs, BenchError, run_to};
use serde_json::Value;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// The bundled session: 10,000 messages of AAPL.
const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../codecs/testdata/itch/aapl-2020-01-30-10k.itch"
);

fn try_run(args: &[&str]) -> Result<String, BenchError> {
    let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("bad arguments {args:?}: {e}"));
    let mut out = Vec::new();
    run_to(&cli.bench, &mut out)?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

/// A quick, one-round `bench replay --json --input FILE` with `extra` arguments.
fn replay(extra: &[&str]) -> Value {
    let mut args = vec![
        "replay",
        "--json",
        "--quick",
        "--rounds",
        "1",
        "--latency-messages",
        "2000",
        "--input",
        FILE,
    ];
    args.extend_from_slice(extra);
    let out = try_run(&args).unwrap_or_else(|e| panic!("bench {args:?} failed: {e}"));
    serde_json::from_str(out.trim()).expect("stdout is one JSON object")
}

fn names(v: &Value) -> Vec<&str> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect()
}

fn notes(v: &Value) -> Vec<&str> {
    v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

/// Whether `python` imports the itch-book package.
fn has_itch_book(python: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import itch_book"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn input_file_is_played_once_per_round_and_its_count_reported() {
    let v = replay(&["--python", "/nonexistent/python3-for-mdbus-tests"]);
    assert_eq!(v["scenario"], "replay");
    // Played once, not repeated to --quick's 20,000 messages.
    assert_eq!(v["params"]["throughput_count"], 10_000, "{v}");
    let names = names(&v);
    assert_eq!(
        names,
        [
            "itchy-parse",
            "mdbus-decode",
            "ring-ceiling",
            "mdbus-feed",
            "mdbus-feed+book",
            "mdbus-decode+book",
            "mdbus-pipeline",
            "mdbus-pipeline-shared",
            "mdbus-pipeline-on-feed",
            "mdbus-pipeline-book-on-feed",
            "mdbus-pipeline-split-books"
        ]
    );
    for r in v["results"].as_array().unwrap() {
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The latency runs play the file's first 2,000 messages.
    for p in &v["results"].as_array().unwrap()[6..] {
        let count = p["count"].as_u64().unwrap();
        assert!(count > 0 && count < 2_000, "{p}");
    }
    let notes = notes(&v);
    assert!(
        notes[0].contains("aapl-2020-01-30-10k.itch: 10000 messages"),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("cycled to 10000")),
        "{notes:?}"
    );
    // The feed+book row's own memory, the figure to set beside itch-book's process.
    let own = notes
        .iter()
        .find(|n| n.starts_with("mdbus-feed+book: its own "))
        .expect("a note on the feed+book row's footprint");
    assert!(
        own.contains("footprint") && own.contains("the file ") && own.contains("its books hold"),
        "{own}"
    );
    // On Linux the figure is the row's peak, as itch-book's is its process's.
    if cfg!(target_os = "linux") {
        assert!(own.contains("peak footprint"), "{own}");
    }
    // No interpreter: the row is absent and a note says why and what adds it.
    let absent = notes
        .iter()
        .find(|n| n.starts_with("itch-book: row absent"))
        .expect("a note on the itch-book row");
    assert!(
        absent.contains("/nonexistent/python3-for-mdbus-tests")
            && absent.contains("pip install itch-book"),
        "{absent}"
    );
    assert!(
        !notes.iter().any(|n| n.contains("/ itch-book")),
        "{notes:?}"
    );
}

#[test]
fn itch_book_row_is_there_when_the_package_imports() {
    let python = std::env::var("MDBUS_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let v = replay(&[
        "--python",
        &python,
        "--systems",
        "mdbus-feed+book,itch-book",
    ]);
    let notes = notes(&v);
    if has_itch_book(&python) {
        assert_eq!(names(&v), ["mdbus-feed+book", "itch-book"], "{notes:?}");
        let row = &v["results"][1];
        assert!(row["msgs_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("itch-book: 10000 messages, 0 unresolved references")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("mdbus-feed+book / itch-book throughput: ")),
            "{notes:?}"
        );
    } else {
        assert_eq!(names(&v), ["mdbus-feed+book"], "{notes:?}");
        assert!(
            notes.iter().any(|n| n.starts_with("itch-book: row absent")),
            "{notes:?}"
        );
    }
}

#[test]
fn python_without_the_package_leaves_the_row_out() {
    // An interpreter that runs but cannot import the package: a stand-in that fails as
    // Python does.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'itch_book'\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let v = replay(&[
        "--python",
        fake.to_str().unwrap(),
        "--systems",
        "mdbus-decode,itch-book",
    ]);
    assert_eq!(names(&v), ["mdbus-decode"]);
    let notes = notes(&v);
    let absent = notes
        .iter()
        .find(|n| n.starts_with("itch-book: row absent"))
        .expect("a note on the itch-book row");
    assert!(
        absent.contains("No module named 'itch_book'") && absent.contains("pip install itch-book"),
        "{absent}"
    );
}

#[test]
fn bad_input_and_flags_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // A frame that claims more bytes than the file holds, after one good message.
    let good = std::fs::read(FILE).unwrap();
    let first = 2 + usize::from(u16::from_be_bytes([good[0], good[1]]));
    let mut bad = good[..first].to_vec();
    bad.extend_from_slice(&[0x00, 0x30, b'A', 0, 1]);
    let path = dir.path().join("truncated.itch");
    std::fs::write(&path, &bad).unwrap();
    let p = path.to_str().unwrap();
    let refused = |args: &[&str]| match try_run(args) {
        Err(BenchError::BadArg(m)) => m,
        other => panic!("{args:?}: expected a refusal, got {other:?}"),
    };
    let m = refused(&["replay", "--quick", "--input", p]);
    assert!(
        m.contains("truncated.itch") && m.contains(&format!("at byte {first}")),
        "{m}"
    );
    assert!(m.contains("after 1 messages"), "{m}");

    let empty = dir.path().join("empty.itch");
    std::fs::write(&empty, b"").unwrap();
    let m = refused(&["replay", "--quick", "--input", empty.to_str().unwrap()]);
    assert!(m.contains("no ITCH 5.0 message"), "{m}");

    match try_run(&["replay", "--quick", "--input", "/nonexistent/day.itch"]) {
        Err(BenchError::Io { path, .. }) => assert_eq!(path, Path::new("/nonexistent/day.itch")),
        other => panic!("expected an I/O error, got {other:?}"),
    }

    let m = refused(&["replay", "--quick", "--input", FILE, "--messages", "50000"]);
    assert!(m.contains("--messages does not apply with --input"), "{m}");

    let m = refused(&["replay", "--quick", "--systems", "itch-book"]);
    assert!(m.contains("itch-book needs --input FILE"), "{m}");
}
