//! The walkthroughs of README.md and bus/examples/README.md, run as written.
//!
//! Each `sh` block is read from the README itself, so a walkthrough that stops working, or a
//! new one nobody runs, fails here. `cargo run --release --bin mdbus -- ARGS` runs this build's
//! `mdbus` with ARGS, `cargo run --release -p mdbus-bus --example NAME -- ARGS` the example
//! binary; nothing else is changed. Each walkthrough runs in network namespaces of its own
//! ("one machine" in one, "host A" and "host B" in two on a bridge) with a bus root of its own
//! (`MDBUS_SHM_ROOT`), so it meets neither the operator's bus root nor other tests' groups.
//! What the prose promises (the same books as a replay, none lost) is checked.
//!
//! Needs root (namespaces); fails, never skips, when the setup fails.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{LIMIT, MDBUS, Net, Proc};
use serde_json::Value;

/// One command of a walkthrough: the comment that introduces it, and its words.
#[derive(Debug, Clone)]
struct Cmd {
    label: String,
    words: Vec<String>,
}

/// A `## ` section of a README with the `sh` blocks in it.
#[derive(Debug)]
struct Section {
    title: String,
    text: String,
    commands: Vec<Cmd>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The sections of `file` (relative to the workspace root) that hold `sh` blocks.
fn sections(file: &str) -> Vec<Section> {
    let text = fs::read_to_string(repo_root().join(file)).expect("README readable");
    let mut out: Vec<Section> = Vec::new();
    let (mut in_sh, mut label, mut pending) = (false, String::new(), String::new());
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            out.push(Section {
                title: title.trim().to_owned(),
                text: String::new(),
                commands: Vec::new(),
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        section.text.push_str(line);
        section.text.push('\n');
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            label.clear();
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            label = comment.trim().to_owned();
            continue;
        }
        // A comment after the command names it, as `# terminal 1` does.
        let (command, comment) = match line.split_once(" #") {
            Some((c, note)) => (c.trim_end(), Some(note.trim())),
            None => (line, None),
        };
        if let Some(c) = command.strip_suffix('\\') {
            pending.push_str(c);
            pending.push(' ');
            continue;
        }
        pending.push_str(command);
        assert!(
            !pending.contains(['"', '\'', '$', '|', '>', '<', '&', ';']),
            "{file}: this test runs commands word by word; quote or shell syntax in {pending:?}"
        );
        section.commands.push(Cmd {
            label: comment.map_or_else(|| label.clone(), str::to_owned),
            words: pending.split_whitespace().map(str::to_owned).collect(),
        });
        pending.clear();
    }
    out.retain(|s| !s.commands.is_empty());
    out
}

fn section(file: &str, title: &str) -> Section {
    sections(file)
        .into_iter()
        .find(|s| s.title == title)
        .unwrap_or_else(|| panic!("{file} has no section {title:?} with commands"))
}

/// The program and arguments a README command runs; `None` for `cargo test` (this run).
fn program(cmd: &Cmd) -> Option<(PathBuf, Vec<String>)> {
    let w: Vec<&str> = cmd.words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["cargo", "test", ..] => None,
        [
            "cargo",
            "run",
            "--release",
            "--bin",
            "mdbus",
            "--",
            args @ ..,
        ] => Some((
            PathBuf::from(MDBUS),
            args.iter().map(|s| (*s).to_owned()).collect(),
        )),
        [
            "cargo",
            "run",
            "--release",
            "-p",
            "mdbus-bus",
            "--example",
            name,
            rest @ ..,
        ] => {
            let args = match rest {
                [] => Vec::new(),
                ["--", args @ ..] => args.iter().map(|s| (*s).to_owned()).collect(),
                _ => panic!("README command not understood: {:?}", cmd.words),
            };
            Some((example(name), args))
        }
        _ => panic!(
            "README command not understood by this test (teach it): {:?}",
            cmd.words
        ),
    }
}

/// The binary of a `mdbus-bus` example, built beside the test binaries by `cargo test`.
fn example(name: &str) -> PathBuf {
    let dir = Path::new(MDBUS)
        .parent()
        .expect("target dir")
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds the examples (or run `cargo build -p \
         mdbus-bus --examples`)",
        path.display()
    );
    path
}

/// Starts `cmd` in host `h` of `net`, in the workspace root, with the host's bus root.
fn start(net: &Net, h: usize, name: &str, cmd: &Cmd) -> Proc {
    let (prog, args) = program(cmd).expect("a command to run");
    let (out, err) = (
        net.file(&format!("{name}.out")),
        net.file(&format!("{name}.err")),
    );
    let child = Command::new("ip")
        .args(["netns", "exec", net.ns(h)])
        .arg(&prog)
        .args(&args)
        .current_dir(repo_root())
        .env("MDBUS_SHM_ROOT", net.root(h))
        .env_remove("MDBUS_LAYOUT")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("output file"))
        .stderr(fs::File::create(&err).expect("output file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", prog.display()));
    Proc {
        name: name.to_owned(),
        child,
        out,
        err,
    }
}

/// The last line of `out` that is a JSON object with `key`.
fn json_with(what: &str, out: &str, key: &str) -> Value {
    out.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v.get(key).is_some())
        .unwrap_or_else(|| panic!("{what}: no JSON line with {key:?} in:\n{out}"))
}

/// The replay the prose compares with (`mdbus replay ... --book-summary` in backticks),
/// run in host `h`; its book summary.
fn replay_named_in(section: &Section, net: &Net, h: usize) -> Value {
    let start_at = section
        .text
        .find("`mdbus replay ")
        .unwrap_or_else(|| panic!("{}: the prose names no `mdbus replay`", section.title));
    let rest = &section.text[start_at + 1..];
    let quoted = &rest[..rest.find('`').expect("closing backtick")];
    let words: Vec<String> = ["cargo", "run", "--release", "--bin", "mdbus", "--"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(quoted.split_whitespace().skip(1).map(str::to_owned))
        .collect();
    let cmd = Cmd {
        label: "the replay the prose names".into(),
        words,
    };
    let done = start(net, h, "prose-replay", &cmd).wait_ok();
    json_with("the replay", &done.out, "books")
}

/// Waits until `cmd`, run again and again in host `h`, prints `what` (at most `LIMIT`).
fn until_prints(net: &Net, h: usize, cmd: &Cmd, what: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let done = start(net, h, "poll", cmd).wait();
        if done.out.contains(what) {
            return done.out;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} printed no {what:?} within {LIMIT:?}: {}{}",
            cmd.words,
            done.out,
            done.err
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the file `path` holds `what` (at most `LIMIT`), while `p` runs.
fn until_file_holds(p: &mut Proc, path: &Path, what: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} wrote no {what:?} within {LIMIT:?}: {text}{}",
            p.name,
            p.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// No command of the walkthrough warned about a deprecated spelling: the READMEs speak the
/// current flag language.
fn assert_current_flags(net: &Net) {
    for entry in fs::read_dir(net.dir.path())
        .expect("output folder")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "err") {
            let err = fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !err.contains("deprecated"),
                "{}: a README command uses an old spelling: {err}",
                path.display()
            );
        }
    }
}

/// The books and counts of two book summaries agree.
fn same_books(what: &str, got: &Value, want: &Value) {
    for key in ["messages", "counts", "books"] {
        assert_eq!(got[key], want[key], "{what}: {key}");
    }
}

#[test]
fn every_walkthrough_has_a_case_here() {
    let known = [
        ("README.md", "Quick start"),
        ("README.md", "What else you can run"),
        ("README.md", "A live feed on one machine"),
        ("README.md", "One stream, two hosts"),
        ("README.md", "Two processes, one stream"),
        (
            "bus/examples/README.md",
            "Run the strategy on a real session",
        ),
        (
            "bus/examples/README.md",
            "Read Nasdaq and IEX as one market",
        ),
    ];
    for file in ["README.md", "bus/examples/README.md"] {
        for s in sections(file) {
            assert!(
                known.contains(&(file, s.title.as_str())),
                "{file}: section {:?} has commands that no test here runs: add a case",
                s.title
            );
            for c in &s.commands {
                program(c);
            }
        }
    }
}

#[test]
fn quick_start_runs_the_demo() {
    let s = section("README.md", "Quick start");
    let net = Net::with_prefix("rdq");
    let mut ran = 0;
    for (i, cmd) in s.commands.iter().enumerate() {
        if program(cmd).is_none() {
            continue;
        }
        let done = start(&net, 0, &format!("quick-{i}"), cmd).wait_ok();
        assert!(
            done.out.contains("feed handler") && done.out.contains("tick-to-strategy"),
            "{:?}: {}",
            cmd.words,
            done.out
        );
        ran += 1;
    }
    assert_eq!(ran, 1, "the quick start runs one main job");
    assert_current_flags(&net);
}

#[test]
fn the_replay_examples_print_book_summaries() {
    let s = section("README.md", "What else you can run");
    let net = Net::with_prefix("rde");
    assert!(!s.commands.is_empty());
    for (i, cmd) in s.commands.iter().enumerate() {
        let done = start(&net, 0, &format!("example-{i}"), cmd).wait_ok();
        let summary = json_with(&cmd.label, &done.out, "books");
        assert!(
            summary["messages"].as_u64().unwrap_or(0) > 0,
            "{:?}: {summary}",
            cmd.words
        );
        assert!(
            summary["books"].as_object().is_some_and(|b| !b.is_empty()),
            "{:?}: {summary}",
            cmd.words
        );
    }
    assert_current_flags(&net);
}

#[test]
fn a_live_feed_on_one_machine() {
    let s = section("README.md", "A live feed on one machine");
    let [feed, exchange, stat] = s.commands.as_slice() else {
        panic!("three terminals expected: {:?}", s.commands);
    };
    assert!(feed.label.contains("terminal 1") && exchange.label.contains("terminal 2"));
    let net = Net::with_prefix("rdl");
    let mut feed_p = start(&net, 0, "feed", feed);
    until_file_holds(&mut feed_p, &net.file("feed.err"), "listening");
    let mut exchange_p = start(&net, 0, "exchange", exchange);
    // Terminal 3, while it runs: the exchange lingers for re-requests after the session.
    let shown = until_prints(&net, 0, stat, "exchange");
    assert!(shown.contains("messages"), "{shown}");
    exchange_p.wait_ok();
    let done = feed_p.wait_ok();
    // "The feed reports 10,000 messages published and none lost".
    assert!(
        done.err.contains("10000 messages published") && done.err.contains(" 0 lost"),
        "{}",
        done.err
    );
    let got = json_with("the feed", &done.out, "books");
    same_books("feed vs replay", &got, &replay_named_in(&s, &net, 0));
    assert_current_flags(&net);
}

#[test]
fn one_stream_two_hosts() {
    let s = section("README.md", "One stream, two hosts");
    let [recv, send, replay] = s.commands.as_slice() else {
        panic!("three commands expected: {:?}", s.commands);
    };
    assert!(recv.label.contains("host B") && send.label.contains("host A"));
    assert!(replay.label.contains("host A"));
    let net = Net::with_prefix("rdt");
    let (a, b) = (0, 1);
    let mut recv_p = start(&net, b, "recv", recv);
    common::wait_ready(&mut recv_p, &net.root(b).join("itch.recv.stat"));
    let mut send_p = start(&net, a, "send", send);
    common::wait_ready(&mut send_p, &net.root(a).join("itch.send.stat"));
    let replay_done = start(&net, a, "replay", replay).wait_ok();
    // "At the end of the session the receiver prints its counters and the same book summary
    // JSON as `mdbus replay --book-summary`."
    let out = until_file_holds(&mut recv_p, &net.file("recv.out"), "\"books\"");
    // The sender ends by itself a second after the session (its linger), which a loaded
    // host can take to print the books.
    send_p.assert_running_or_done();
    recv_p.signal(libc::SIGTERM);
    recv_p.wait();
    let got = json_with("the receiver", &out, "books");
    assert!(!replay_done.err.contains("error"), "{}", replay_done.err);
    let want = json_with(
        "the replay",
        &start(
            &net,
            a,
            "replay-summary",
            &Cmd {
                label: "replay --book-summary".into(),
                words: replay
                    .words
                    .iter()
                    .cloned()
                    .chain(["--book-summary".to_owned(), "--feed".into(), "check".into()])
                    .collect(),
            },
        )
        .wait_ok()
        .out,
        "books",
    );
    same_books("recv vs replay", &got, &want);
    assert_current_flags(&net);
}

#[test]
fn two_processes_one_stream() {
    let s = section("README.md", "Two processes, one stream");
    let [publisher, subscriber] = s.commands.as_slice() else {
        panic!("two terminals expected: {:?}", s.commands);
    };
    let net = Net::with_prefix("rdp");
    let mut pub_p = start(&net, 0, "publisher", publisher);
    let mut sub_p = start(&net, 0, "subscriber", subscriber);
    let pub_done = pub_p.wait_ok();
    let sub_done = sub_p.wait_ok();
    assert!(pub_done.out.contains("published"), "{}", pub_done.out);
    assert!(
        sub_done.out.contains("stream closed by its publisher"),
        "{}",
        sub_done.out
    );
    assert!(!sub_done.out.contains("corrupt: 1"), "{}", sub_done.out);
    assert_current_flags(&net);
}

#[test]
fn the_example_strategy_reads_a_replayed_session() {
    let s = section(
        "bus/examples/README.md",
        "Run the strategy on a real session",
    );
    let [replay, strategy] = s.commands.as_slice() else {
        panic!("two commands expected: {:?}", s.commands);
    };
    let net = Net::with_prefix("rds");
    start(&net, 0, "replay", replay).wait_ok();
    // It stops at the end of the session, having read every BBO change and print of the
    // bundled session (the demo's counts).
    let done = start(&net, 0, "strategy", strategy).wait_ok();
    assert!(
        done.out.contains("2792 BBO updates, 1089 trades") && done.out.contains(" 0 gaps"),
        "{}{}",
        done.out,
        done.err
    );
    assert!(
        done.out
            .contains("AAPL   bid 320.1400 x 25  ask 320.3000 x 100"),
        "{}",
        done.out
    );
    assert_current_flags(&net);
}

#[test]
fn the_example_strategy_reads_nasdaq_and_iex_as_one_market() {
    let s = section(
        "bus/examples/README.md",
        "Read Nasdaq and IEX as one market",
    );
    let [nasdaq, iex, consolidate, strategy] = s.commands.as_slice() else {
        panic!("four commands expected: {:?}", s.commands);
    };
    let net = Net::with_prefix("rdc");
    start(&net, 0, "nasdaq", nasdaq).wait_ok();
    start(&net, 0, "iex", iex).wait_ok();
    // "runs until every input's session has ended": both replays have ended.
    let done = start(&net, 0, "consolidate", consolidate).wait_ok();
    let report = format!("{}{}", done.out, done.err);
    assert!(
        report.contains("2 inputs ended") && report.contains("consolidated out"),
        "{report}"
    );
    // "a line per consolidated top, then the last top of each symbol", IEX's among them.
    let done = start(&net, 0, "strategy", strategy).wait_ok();
    assert!(
        done.out.lines().filter(|l| l.contains("Iex")).count() > 1,
        "{}{}",
        done.out,
        done.err
    );
    assert_current_flags(&net);
}
