//! `mdbus stat --serve`: a scrape of `/metrics` is valid Prometheus text (OpenMetrics), holds
//! one family per counter with a sample per running role, follows the roles' counters between
//! scrapes, and drops a role once it finished.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdbus_shm::counters::CounterFile;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

/// The `mdbus stat --serve` process, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(root: &std::path::Path) -> Server {
    let mut child = Command::new(MDBUS)
        .args(["stat", "--serve", "127.0.0.1:0", "--root"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mdbus stat --serve");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("read the first line");
    // A log line: a timestamp and a level before the message.
    let addr = line
        .trim()
        .split_once("mdbus stat: serving http://")
        .and_then(|(_, s)| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Server { child, addr }
}

/// One HTTP GET; returns the status line, the headers and the body.
fn get(addr: &str, path: &str) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// A sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the exposition text strictly: `# HELP`, `# TYPE` (before the family's samples, once
/// each), samples `name{k="v",...} value`, and `# EOF` last. Returns the families' types and
/// the samples.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut samples = Vec::new();
    let mut lines = text.lines().peekable();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF");
            return (types, samples);
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(valid_name(name), "{line}");
            assert!(!help.is_empty(), "{line}");
            assert!(
                helps.insert(name.to_owned(), help.to_owned()).is_none(),
                "two HELP: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("# TYPE name type");
            assert!(valid_name(name), "{line}");
            assert!(matches!(ty, "counter" | "gauge"), "{line}");
            assert!(
                types.insert(name.to_owned(), ty.to_owned()).is_none(),
                "two TYPE: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        assert!(valid_name(name), "{line}");
        let family = name.strip_suffix("_total").unwrap_or(name);
        let ty = types
            .get(family)
            .unwrap_or_else(|| panic!("sample before its # TYPE: {line}"));
        assert_eq!(
            ty == "counter",
            name.ends_with("_total"),
            "a counter's samples end in _total: {line}"
        );
        let mut map = BTreeMap::new();
        for pair in labels.split(",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label k=v");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("quoted label value");
            assert!(valid_name(k), "{line}");
            map.insert(k.to_owned(), v.to_owned());
        }
        samples.push((name.to_owned(), map, value));
    }
    panic!("no # EOF at the end");
}

fn value(samples: &[Sample], name: &str, role: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.get("role").map(String::as_str) == Some(role))
        .map(|s| s.2)
}

#[test]
fn a_scrape_parses_and_follows_the_roles_counters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    mdbus_bus::Bus::with_root(&root).expect("bus root");
    let feed = CounterFile::create(
        &root,
        "itch",
        "feed",
        "group 239.1.1.1:5000",
        &["packets", "sequencer.gaps"],
    )
    .expect("feed counters");
    feed.publish(&[120, 3]);
    let send = CounterFile::create(&root, "itch", "send", "", &["packets", "bytes"])
        .expect("send counters");
    send.publish(&[42, 9000]);

    let server = serve(&root);
    let (status, headers, body) = get(&server.addr, "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    let (types, samples) = parse(&body);
    assert_eq!(
        types.get("mdbus_packets").map(String::as_str),
        Some("counter")
    );
    assert_eq!(types.get("mdbus_up").map(String::as_str), Some("gauge"));
    assert_eq!(value(&samples, "mdbus_packets_total", "feed"), Some(120.0));
    assert_eq!(value(&samples, "mdbus_packets_total", "send"), Some(42.0));
    assert_eq!(
        value(&samples, "mdbus_sequencer_gaps_total", "feed"),
        Some(3.0)
    );
    assert_eq!(value(&samples, "mdbus_bytes_total", "send"), Some(9000.0));
    assert_eq!(value(&samples, "mdbus_up", "feed"), Some(1.0));
    let pid = std::process::id().to_string();
    assert!(
        samples
            .iter()
            .filter(|(n, _, _)| n == "mdbus_packets_total")
            .all(
                |(_, l, _)| l.get("stream").map(String::as_str) == Some("itch")
                    && l.get("pid") == Some(&pid)
            ),
        "{body}"
    );

    // The next scrape sees new values, and a finished role is gone.
    feed.publish(&[250, 4]);
    send.finish();
    let (_, _, body) = get(&server.addr, "/metrics");
    let (_, samples) = parse(&body);
    assert_eq!(value(&samples, "mdbus_packets_total", "feed"), Some(250.0));
    assert_eq!(
        value(&samples, "mdbus_packets_total", "send"),
        None,
        "{body}"
    );

    let (status, _, _) = get(&server.addr, "/other");
    assert!(status.contains("404"), "{status}");
}

#[test]
fn watch_prints_each_sample_with_its_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    mdbus_bus::Bus::with_root(&root).expect("bus root");
    let feed = CounterFile::create(&root, "itch", "feed", "", &["packets"]).expect("counters");
    feed.publish(&[10]);
    let mut child = Command::new(MDBUS)
        .args(["stat", "--watch", "0.2", "--root"])
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mdbus stat --watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("utf-8");
    let mut samples = Vec::new();
    while samples.len() < 2 {
        let line = next();
        if line.starts_with("mdbus stat ") {
            assert!(line.contains(" UTC  (every 200ms"), "{line}");
            samples.push(Vec::new());
        } else if let Some(s) = samples.last_mut() {
            s.push(line);
        }
        feed.publish(&[10 + 5 * samples.len() as u64]);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        samples[0].iter().any(|l| l.starts_with("feed itch")),
        "{samples:?}"
    );
    // Not a terminal: no screen-clearing codes, samples one after the other.
    assert!(
        samples.iter().flatten().all(|l| !l.contains('\x1b')),
        "{samples:?}"
    );
}
