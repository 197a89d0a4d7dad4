//! `--config FILE` of `feed`, `send`, `recv` and `exchange`, and `mdbus config example ROLE`.
//!
//! Most cases end at the bus root, which is a path under a regular file here: a run that gets
//! that far (status 1, `bus root` in the error) had its command line accepted; a refused
//! command line is a usage error (status 2) before anything is set up.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

/// A bus root that cannot be opened (a path under a regular file).
const NO_ROOT: &str = "/dev/null/mdbus-flags-cli";

/// What a run of `mdbus` did.
#[derive(Debug)]
struct Out {
    /// The exit status; `None` when it had to be killed (it ran on).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `mdbus args`, killing it after `limit` (a command line that should have been refused
/// may run on, receiving).
fn mdbus_for(args: &[&str], limit: Duration) -> Out {
    let mut child = Command::new(MDBUS)
        .args(args)
        .env_remove("MDBUS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("MDBUS_LAYOUT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mdbus");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for mdbus") {
            break status.code();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn mdbus(args: &[&str]) -> Out {
    mdbus_for(args, Duration::from_secs(20))
}

/// Asserts `args` got past its command line (to the bus root that cannot be opened).
fn accepted(args: &[&str]) -> Out {
    let o = mdbus(args);
    assert_eq!(o.code, Some(1), "mdbus {args:?}: {o:?}");
    assert!(o.stderr.contains("bus root"), "mdbus {args:?}: {o:?}");
    o
}

fn itch_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn every_example_configuration_parses_back_and_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let itch = itch_file();
    for role in ["feed", "send", "recv", "exchange"] {
        let o = mdbus(&["config", "example", role]);
        assert_eq!(o.code, Some(0), "{o:?}");
        let table: toml::Table = o.stdout.parse().unwrap_or_else(|e| panic!("{role}: {e}"));
        assert!(table.len() > 5, "{role}: {table:?}");
        assert!(o.stdout.lines().any(|l| l.starts_with("# ")), "comments");
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, &o.stdout).expect("write the example");
        let mut args = vec![role, "--config", s(&path), "--root", NO_ROOT];
        if role == "exchange" {
            args.push(s(&itch));
        }
        accepted(&args);
    }
}

#[test]
fn a_configuration_with_an_unknown_key_or_a_bad_value_is_refused_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("recv.toml");
    for (text, key, why) in [
        (
            "stream = \"x\"\nnak-dealy = \"1ms\"\n",
            "nak-dealy",
            "unknown key",
        ),
        ("stream = \"x\"\nring-mb = 4\n", "ring-mb", "unknown key"),
        ("stream = \"x\"\n[group]\nx = 1\n", "group", "table"),
        (
            "stream = \"x\"\nsummary = \"yes\"\n",
            "summary",
            "true or false",
        ),
        (
            "stream = \"x\"\ngroup = [\"239.1.1.1:1\"]\n",
            "group",
            "not a list",
        ),
        (
            "stream = \"x\"\nnak-delay = \"5\"\n",
            "nak-delay",
            "no unit",
        ),
        (
            "stream = \"x\"\nring-size = \"3MiB\"\n",
            "ring-size",
            "not a power of two",
        ),
        (
            "stream = \"x\"\ngroup = \"10.1.1.1:5\"\n",
            "group",
            "not a multicast",
        ),
        ("stream = \"x\"\nnak-delay = ", "nak-delay", "TOML"),
    ] {
        std::fs::write(&path, text).expect("write");
        let o = mdbus(&["recv", "--config", s(&path), "--root", NO_ROOT]);
        assert_eq!(o.code, Some(2), "{text:?}: {o:?}");
        assert!(o.stderr.contains(key), "{text:?}: {key} not named: {o:?}");
        assert!(o.stderr.contains(why), "{text:?}: {why:?} not said: {o:?}");
        assert!(
            o.stderr.contains(s(&path)),
            "{text:?}: the file not named: {o:?}"
        );
    }
    let o = mdbus(&["recv", "--config", "/dev/null/none.toml", "--root", NO_ROOT]);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("/dev/null/none.toml"), "{o:?}");
}

#[test]
fn flags_on_the_command_line_win_over_the_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let path = dir.path().join("exchange.toml");
    std::fs::write(
        &path,
        "group = \"239.255.121.7:31907\"\n\
         interface = \"127.0.0.1\"\n\
         request-port = 31908\n\
         session = \"FROMFILE\"\n\
         linger = \"100ms\"\n\
         summary = true\n",
    )
    .expect("write");
    let itch = itch_file();
    let o = mdbus_for(
        &[
            "-v",
            "exchange",
            s(&itch),
            "--config",
            s(&path),
            "--session",
            "FROMFLAG",
            "--root",
            s(&root),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let summary: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("one JSON");
    assert_eq!(summary["session"], "FROMFLAG", "the flag wins: {summary}");
    assert_eq!(
        summary["group"], "239.255.121.7:31907",
        "the file's: {summary}"
    );
    assert_eq!(summary["counters"]["messages"], 10_000, "{summary}");
    assert!(
        o.stderr.contains("given on the command line instead") && o.stderr.contains("session"),
        "{o:?}"
    );
}
