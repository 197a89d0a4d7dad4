//! `mdbus send` and `mdbus recv` between "hosts": network namespaces joined by a bridge, with
//! real multicast, real loss (nftables in a receiver's namespace), the seeded fault injector,
//! restarts, junk on the group, a re-request flood, and tshark as an independent reader of the
//! wire.
//!
//! ```text
//!   ns "snd" 10.234.0.1    ns "rx1" 10.234.0.2    ns "rx2" 10.234.0.3    ns "rogue" 10.234.0.4
//!   replay -> s -> send    recv -> s (local)      recv -> s (local)      flood / junk
//!        eth0 |                 eth0 |                 eth0 |                 eth0 |
//!   ----------+------------- br0 (its own namespace "br") --+-----------------------+--------
//! ```
//!
//! Every case replays the real AAPL ITCH sample into the sender's stream and checks, for each
//! receiver, that its local stream holds every record of the sender's stream exactly once, in
//! order, byte for byte, with a transport gap notice exactly where messages were lost on
//! purpose; that the `--summary` counters agree; and, where nothing was lost for good, that
//! `recv --book-summary` equals `replay --book-summary`.
//!
//! Needs root (namespaces, veth, bridge, nftables) and `ip`, `nft` and `tshark`. A case fails,
//! never skips, when its setup fails. Namespaces are named after this process and deleted on
//! drop; children are killed on drop.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mdbus_bus::net::counters::read_counters;
use mdbus_bus::net::wire;
use mdbus_bus::schema::GapScope;
use mdbus_bus::{Bus, ENVELOPE_MSG_TYPE, ProducerStatus, ReceiveError, SubscribeOptions};
use mdbus_codecs::moldudp64::{HEADER_LEN, PacketBuilder, RequestPacket, Session, encode_header};
use serde_json::Value;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");
/// How long any one step may take before the case fails (generous: the machine is shared).
const LIMIT: Duration = Duration::from_secs(60);
/// The stream sent, and the local stream of each receiver.
const STREAM: &str = "s";
const PORT: u16 = 31_000;
const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 234, 0, 1), PORT);
/// Idle strategy of every role: the processes share two cores with other tests.
const IDLE: &str = "sleep:50";

/// The hosts, as indexes into [`Net::hosts`].
const SND: usize = 0;
const RX1: usize = 1;
const RX2: usize = 2;
const ROGUE: usize = 3;
const HOSTS: [&str; 4] = ["snd", "rx1", "rx2", "rogue"];

fn host_ip(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 234, 0, 1 + h as u8)
}

fn itch_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

// ---------------------------------------------------------------------------------------------
// Host commands and namespaces

/// Runs a host command to completion; fails the case, saying what is needed, if it cannot.
fn host_cmd(prog: &str, args: &[&str], stdin: Option<&str>) -> String {
    let line = format!("{prog} {}", args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{line}`: {e} -- these tests need root and iproute2, nftables and \
                 tshark installed"
            )
        });
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing to `{line}`: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{line}`: {e}"));
    assert!(
        out.status.success(),
        "`{line}` failed ({}): {} -- these tests need root, network namespaces, nftables and \
         tshark",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    host_cmd("ip", args, None);
}

/// Moves this thread into network namespace `name` (other threads stay where they are).
fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let f = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: `setns` with a valid namespace file descriptor (open for the call) and
    // CLONE_NEWNET changes only this thread's network namespace; no memory is involved.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Deletes the namespaces of earlier runs of these tests whose process is gone (killed before
/// it could clean up).
fn remove_stale_namespaces() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mdbus-mh")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Four "hosts" (network namespaces) on one bridge that lives in a fifth namespace, so
/// nothing is added to the host's own namespace. Each host has a bus root and an output
/// folder under one temporary directory. Everything is deleted on drop.
struct Net {
    bridge: String,
    hosts: [String; 4],
    dir: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        remove_stale_namespaces();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("mdbus-mh{}-{n}", std::process::id());
        // Built before the namespaces exist, so a failing setup still deletes what it made.
        let net = Net {
            bridge: format!("{base}-br"),
            hosts: HOSTS.map(|h| format!("{base}-{h}")),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        let br = net.bridge.as_str();
        ip(&["netns", "add", br]);
        ip(&["-n", br, "link", "set", "lo", "up"]);
        // Snooping off: the bridge floods multicast to every port, as a plain switch would.
        ip(&[
            "-n",
            br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for (h, ns) in net.hosts.iter().enumerate() {
            ip(&["netns", "add", ns]);
            let port = format!("p{h}");
            ip(&[
                "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["-n", br, "link", "set", &port, "master", "br0"]);
            ip(&["-n", br, "link", "set", &port, "up"]);
            let addr = format!("{}/24", host_ip(h));
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
            fs::create_dir_all(net.root(h)).expect("bus root");
        }
        net
    }

    fn ns(&self, h: usize) -> &str {
        &self.hosts[h]
    }

    /// Bus root of host `h`.
    fn root(&self, h: usize) -> PathBuf {
        self.dir.path().join(format!("root-{}", HOSTS[h]))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Loads an nftables ruleset (a table `inet t` with a filter chain `in` on the input hook
    /// holding `rules`) into host `h`.
    fn nft(&self, h: usize, rules: &[&str]) {
        let mut script = String::from(
            "table inet t {\n  chain in {\n    type filter hook input priority 0; policy accept;\n",
        );
        for r in rules {
            script.push_str("    ");
            script.push_str(r);
            script.push('\n');
        }
        script.push_str("  }\n}\n");
        host_cmd(
            "ip",
            &["netns", "exec", self.ns(h), "nft", "-f", "-"],
            Some(&script),
        );
    }

    /// Packets counted by the `counter` statements of table `inet t` in host `h`.
    fn nft_counted(&self, h: usize) -> u64 {
        let out = host_cmd(
            "ip",
            &[
                "netns",
                "exec",
                self.ns(h),
                "nft",
                "-j",
                "list",
                "table",
                "inet",
                "t",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).expect("nft -j prints JSON");
        let mut total = 0;
        for item in v["nftables"].as_array().expect("nftables array") {
            for e in item["rule"]["expr"].as_array().into_iter().flatten() {
                if let Some(p) = e["counter"]["packets"].as_u64() {
                    total += p;
                }
            }
        }
        total
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.bridge]) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process whose output goes to files; killed on drop.
struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// What a finished child printed.
#[derive(Debug)]
struct Done {
    status: ExitStatus,
    out: String,
    err: String,
}

impl Proc {
    /// Runs `args` (the `mdbus` binary unless `prog` is given) in host `ns` (`None`: here).
    fn spawn(
        net: &Net,
        name: &str,
        ns: Option<usize>,
        prog: Option<&str>,
        args: &[String],
    ) -> Proc {
        let (out, err) = (
            net.file(&format!("{name}.out")),
            net.file(&format!("{name}.err")),
        );
        let prog = prog.unwrap_or(MDBUS);
        let mut cmd = match ns {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", net.ns(h), prog]);
                c
            }
            None => Command::new(prog),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("output file"))
            .stderr(fs::File::create(&err).expect("output file"));
        // Killed with the test thread that started it, even if the test process is killed.
        let die_with_parent = || {
            // SAFETY: `prctl(PR_SET_PDEATHSIG)` takes integers only and touches no memory.
            let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: the closure runs in the forked child before exec; it calls only `prctl`,
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(die_with_parent);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {prog} {args:?}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            out,
            err,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Fails the case if the child has exited (it was expected to keep running).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}): {}",
                self.name,
                self.stderr().trim()
            );
        }
    }

    /// Sends `sig` (`libc::SIGTERM`, `libc::SIGINT`, ...).
    fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: `kill` takes plain integers; `pid` is our own child, not yet reaped (a
        // `Child` is reaped only by `wait`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill {} ({}): {}",
            self.pid(),
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the child to exit (at most `LIMIT`), returns what it printed.
    fn wait(&mut self) -> Done {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = self.child.kill();
                    panic!(
                        "{} did not finish within {LIMIT:?}; stderr: {}",
                        self.name,
                        self.stderr().trim()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        };
        Done {
            status,
            out: fs::read_to_string(&self.out).unwrap_or_default(),
            err: self.stderr(),
        }
    }

    /// [`wait`](Self::wait), and the child must have succeeded.
    fn wait_ok(&mut self) -> Done {
        let d = self.wait();
        assert!(
            d.status.success(),
            "{} failed ({}): {}",
            self.name,
            d.status,
            d.err.trim()
        );
        d
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits until the counters file `path` is written by `p` (the role is bound and joined),
/// returns its detail line.
fn wait_ready(p: &mut Proc, path: &Path) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(s) = read_counters(path)
            && s.pid == p.pid()
        {
            return s.detail;
        }
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} wrote no counters at {} within {LIMIT:?}",
            p.name,
            path.display()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `mdbus recv` on receiver host `h` (ready: sockets joined, local stream created).
fn start_recv(net: &Net, h: usize, name: &str, extra: &[&str]) -> Proc {
    let mut args = strings(&["recv", STREAM, "--group"]);
    args.push(GROUP.to_string());
    args.extend(strings(&["--interface", &host_ip(h).to_string()]));
    args.extend(strings(&["--exit-at-end", "--summary", "--book-summary"]));
    args.extend(strings(&["--idle", IDLE, "--root"]));
    args.push(net.root(h).display().to_string());
    args.extend(strings(extra));
    let mut p = Proc::spawn(net, name, Some(h), None, &args);
    wait_ready(&mut p, &net.root(h).join(format!("{STREAM}.recv.stat")));
    p
}

/// Starts `mdbus send` of the sender host's stream from its oldest record; returns it
/// (ready: sockets bound) and its session name.
fn start_send(net: &Net, name: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = strings(&["send", STREAM, "--group"]);
    args.push(GROUP.to_string());
    args.extend(strings(&["--interface", &host_ip(SND).to_string()]));
    args.extend(strings(&["--start", "oldest", "--summary", "--idle", IDLE]));
    args.push("--root".into());
    args.push(net.root(SND).display().to_string());
    args.extend(strings(extra));
    let mut p = Proc::spawn(net, name, Some(SND), None, &args);
    let detail = wait_ready(&mut p, &net.root(SND).join(format!("{STREAM}.send.stat")));
    let session = detail.rsplit(' ').next().unwrap_or_default().to_owned();
    assert_eq!(session.len(), 10, "a session name in {detail:?}");
    (p, session)
}

/// Starts `mdbus replay` of the AAPL sample into the sender host's stream at `speed`.
fn start_replay(net: &Net, speed: &str) -> Proc {
    let mut args = strings(&["replay"]);
    args.push(itch_file().display().to_string());
    args.extend(strings(&[
        "--feed",
        STREAM,
        "--book-summary",
        "--no-progress",
    ]));
    args.extend(strings(&["--speed", speed, "--root"]));
    args.push(net.root(SND).display().to_string());
    Proc::spawn(net, "replay", None, None, &args)
}

/// A counter of a live role, read from its counters file (0 until it is written).
fn live_counter(root: &Path, role: &str, name: &str) -> u64 {
    read_counters(&root.join(format!("{STREAM}.{role}.stat")))
        .ok()
        .and_then(|s| s.get(name))
        .unwrap_or(0)
}

/// Stops a paced replay (`SIGSTOP`), which must still be running: the stream is not over.
fn pause(replay: &mut Proc) {
    replay.signal(libc::SIGSTOP);
    replay.assert_running();
}

/// Waits until receiver host `h` delivered at least `n` messages.
fn wait_delivered(net: &Net, h: usize, n: u64, p: &mut Proc) {
    let deadline = Instant::now() + LIMIT;
    while live_counter(&net.root(h), "recv", "messages") < n {
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} delivered fewer than {n} messages within {LIMIT:?}",
            p.name
        );
        thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading streams

/// One record of a local stream: a transport gap notice, or anything else, as published.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Rec(u32, Vec<u8>),
    Gap { first: u64, count: u64 },
}

impl Item {
    fn of(msg_type: u32, payload: &[u8]) -> Item {
        if msg_type == ENVELOPE_MSG_TYPE
            && let Ok(env) = mdbus_bus::schema::root_as_envelope(payload)
            && let Some(g) = env.event_as_gap_notice()
            && g.scope() == GapScope::Transport
        {
            assert!(!g.recoverable(), "transport gap notices are final");
            return Item::Gap {
                first: g.first_missing_seq(),
                count: g.count(),
            };
        }
        Item::Rec(msg_type, payload.to_vec())
    }
}

/// Reads stream [`STREAM`] under `root`, every epoch of it (a receiver starts a new one per
/// session, and a restarted receiver another), until `done` is set and everything is read.
fn read_epochs(root: &Path, done: &AtomicBool) -> Vec<Vec<Item>> {
    let bus = Bus::with_root(root).expect("bus root");
    let deadline = Instant::now() + 3 * LIMIT;
    let mut sub = loop {
        let stopping = done.load(Ordering::Acquire);
        match bus.subscriber(STREAM, &SubscribeOptions::default()) {
            Ok(s) => break s,
            Err(_) if stopping => return Vec::new(),
            Err(e) => {
                assert!(Instant::now() < deadline, "{}: {e}", root.display());
                thread::sleep(Duration::from_millis(2));
            }
        }
    };
    let mut epochs = vec![Vec::new()];
    let mut idle_turns = 0u32;
    loop {
        assert!(
            Instant::now() < deadline,
            "reading {} took too long",
            root.display()
        );
        // Read before polling: once set, every record was committed before this poll.
        let stopping = done.load(Ordering::Acquire);
        let cur = epochs.last_mut().expect("an epoch");
        let r = sub.poll(|m| cur.push(Item::of(m.msg_type(), m.payload())));
        let switch = match r {
            Ok(true) => {
                idle_turns = 0;
                continue;
            }
            Ok(false) => {
                idle_turns += 1;
                let replaced = idle_turns.is_multiple_of(16)
                    && sub.producer_status(LIMIT) == ProducerStatus::Replaced;
                if replaced {
                    // The old publisher is gone: read what it wrote last, then move on.
                    while sub
                        .poll(|m| cur.push(Item::of(m.msg_type(), m.payload())))
                        .is_ok_and(|more| more)
                    {}
                }
                replaced || stopping
            }
            Err(ReceiveError::Closed | ReceiveError::NewEpoch { .. }) => true,
            Err(e) => panic!("reading {}: {e}", root.display()),
        };
        if switch {
            let change = sub
                .reopen()
                .unwrap_or_else(|e| panic!("reopening {}: {e}", root.display()));
            if change.new != change.old {
                epochs.push(Vec::new());
                continue;
            }
            if stopping {
                return epochs;
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// A thread reading a receiver's local stream while it runs.
struct Reader {
    done: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Vec<Item>>>,
}

impl Reader {
    fn start(root: PathBuf) -> Reader {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        Reader {
            done,
            handle: thread::spawn(move || read_epochs(&root, &d)),
        }
    }

    /// Call once the writer is gone: the epochs read.
    fn finish(self) -> Vec<Vec<Item>> {
        self.done.store(true, Ordering::Release);
        self.handle.join().expect("stream reader")
    }
}

/// The sender host's stream, as the replay wrote it.
fn sender_stream(net: &Net) -> Vec<(u32, Vec<u8>)> {
    let epochs = read_epochs(&net.root(SND), &AtomicBool::new(true));
    assert_eq!(epochs.len(), 1, "one epoch in the sender's stream");
    epochs
        .into_iter()
        .flatten()
        .map(|it| match it {
            Item::Rec(t, p) => (t, p),
            Item::Gap { first, count } => panic!("a gap notice {first}+{count} in the source"),
        })
        .collect()
}

/// Where a local epoch ended up against the sender's stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Walk {
    /// The session sequence number after the last record or notice.
    next: u64,
    delivered: u64,
    /// (first, count) of each transport gap notice.
    gaps: Vec<(u64, u64)>,
}

/// Walks a local epoch (a session: sequence numbers from 1) against the sender's stream:
/// every record must be the next message, byte for byte, every gap notice must start exactly
/// at the next message and stay within the stream.
fn walk(what: &str, items: &[Item], stream: &[(u32, Vec<u8>)]) -> Walk {
    let mut w = Walk {
        next: 1,
        ..Walk::default()
    };
    let total = stream.len() as u64;
    for (k, it) in items.iter().enumerate() {
        match it {
            Item::Rec(t, p) => {
                let Some((et, ep)) = stream.get((w.next - 1) as usize) else {
                    panic!("{what}: record {k} is beyond the {total} messages sent");
                };
                assert!(
                    t == et && p == ep,
                    "{what}: record {k} (type {t}, {} bytes) is not message {} of the sender's \
                     stream (type {et}, {} bytes)",
                    p.len(),
                    w.next,
                    ep.len()
                );
                w.next += 1;
                w.delivered += 1;
            }
            Item::Gap { first, count } => {
                assert_eq!(
                    *first, w.next,
                    "{what}: record {k} is a gap notice of {count} from {first}, where message {} \
                     was due",
                    w.next
                );
                assert!(
                    *count > 0 && first + count <= total + 1,
                    "{what}: gap notice {first}+{count} outside the {total} messages sent"
                );
                w.gaps.push((*first, *count));
                w.next += count;
            }
        }
    }
    w
}

/// Every message exactly once, in order, byte for byte, and no gap notice.
fn assert_complete(what: &str, items: &[Item], stream: &[(u32, Vec<u8>)]) {
    let w = walk(what, items, stream);
    assert_eq!(w.gaps, [], "{what}: no gap notices");
    assert_eq!(
        w.delivered,
        stream.len() as u64,
        "{what}: every message of the sender's stream"
    );
}

// ---------------------------------------------------------------------------------------------
// Summaries

/// A counter of a `--summary` JSON object.
fn counter(summary: &Value, name: &str) -> u64 {
    summary["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name:?} in {summary}"))
}

/// The JSON lines a role printed.
fn json_lines(what: &str, out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}")))
        .collect()
}

/// What a receiver printed and published.
#[derive(Debug)]
struct RecvOut {
    /// The `--summary` object.
    summary: Value,
    /// The `--book-summary` object.
    book: Value,
    epochs: Vec<Vec<Item>>,
}

fn recv_out(what: &str, done: &Done, epochs: Vec<Vec<Item>>) -> RecvOut {
    let lines = json_lines(what, &done.out);
    assert_eq!(
        lines.len(),
        2,
        "{what}: a summary and a book summary: {}",
        done.out
    );
    assert_eq!(lines[0]["role"], "recv", "{what}: {}", lines[0]);
    RecvOut {
        summary: lines[0].clone(),
        book: lines[1].clone(),
        epochs,
    }
}

fn send_summary(done: &Done) -> Value {
    let lines = json_lines("send", &done.out);
    assert_eq!(lines.len(), 1, "send prints one summary: {}", done.out);
    assert_eq!(lines[0]["role"], "send");
    lines[0].clone()
}

fn replay_book(done: &Done) -> Value {
    let lines = json_lines("replay", &done.out);
    assert_eq!(
        lines.len(),
        1,
        "replay prints one book summary: {}",
        done.out
    );
    lines[0].clone()
}

/// `recv --book-summary` equals `replay --book-summary`, field by field.
fn assert_same_books(what: &str, replay: &Value, recv: &Value) {
    let (Some(a), Some(b)) = (replay.as_object(), recv.as_object()) else {
        panic!("{what}: book summaries are objects: {replay} / {recv}");
    };
    for (k, v) in a {
        assert_eq!(b.get(k), Some(v), "{what}: book summary field {k:?}");
    }
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: the same fields: {replay} / {recv}"
    );
}

// ---------------------------------------------------------------------------------------------
// The usual run: two receivers, a sender, a replay

/// Receivers that may lose or see reordered the session's first datagrams ask for everything
/// from its first message (`--join start`), so these cases do not depend on how a receiver
/// tells a session it saw begin from one it joined late; the default is checked on its own
/// ([`a_receiver_up_before_the_session_recovers_a_lost_first_datagram`]).
const JOIN_START: &[&str] = &["--join", "start"];

/// How one run is set up.
struct Spec<'a> {
    send: &'a [&'a str],
    rx1: &'a [&'a str],
    rx2: &'a [&'a str],
    /// `mdbus replay --speed`.
    speed: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            send: &["--linger-ms", "1000"],
            rx1: &[],
            rx2: &[],
            speed: "max",
        }
    }
}

/// What one run produced.
struct Outcome {
    stream: Vec<(u32, Vec<u8>)>,
    session: String,
    replay_book: Value,
    send: Value,
    /// From starting the sender to its exit.
    send_lifetime: Duration,
    rx: [RecvOut; 2],
}

impl Outcome {
    fn rx(&self, h: usize) -> &RecvOut {
        &self.rx[h - RX1]
    }
}

/// Receivers first (joined and ready), then the sender, then the replay; `during` runs while
/// the replay does (with the session name); then everything is waited for and read.
fn run(net: &Net, spec: &Spec<'_>, during: impl FnOnce(&Net, &str)) -> Outcome {
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    let mut rx1 = start_recv(net, RX1, "rx1", spec.rx1);
    let mut rx2 = start_recv(net, RX2, "rx2", spec.rx2);
    let started = Instant::now();
    let (mut tx, session) = start_send(net, "send", spec.send);
    let mut replay = start_replay(net, spec.speed);
    during(net, &session);
    let replayed = replay.wait_ok();
    let (d1, d2) = (rx1.wait_ok(), rx2.wait_ok());
    let sent = tx.wait_ok();
    let send_lifetime = started.elapsed();
    let [r1, r2] = readers;
    let (e1, e2) = (r1.finish(), r2.finish());
    let send = send_summary(&sent);
    assert_eq!(send["session"], session.as_str());
    Outcome {
        stream: sender_stream(net),
        session,
        replay_book: replay_book(&replayed),
        send,
        send_lifetime,
        rx: [recv_out("rx1", &d1, e1), recv_out("rx2", &d2, e2)],
    }
}

/// The checks every run without unrecoverable loss passes.
fn assert_all_delivered(o: &Outcome) {
    let total = o.stream.len() as u64;
    assert!(
        total > 10_000,
        "the AAPL sample and its end: {total} records"
    );
    assert_eq!(counter(&o.send, "messages"), total, "{}", o.send);
    assert_eq!(counter(&o.send, "sessions"), 1);
    assert_eq!(counter(&o.send, "stream_lost"), 0);
    assert_eq!(counter(&o.send, "send_errors"), 0);
    for (h, what) in [(RX1, "rx1"), (RX2, "rx2")] {
        let r = o.rx(h);
        let s = &r.summary;
        assert_eq!(r.epochs.len(), 1, "{what}: one session, one local epoch");
        assert_complete(what, &r.epochs[0], &o.stream);
        assert_eq!(counter(s, "messages"), total, "{what}: {s}");
        assert_eq!(counter(s, "published"), total, "{what}: {s}");
        assert_eq!(counter(s, "unrecoverable"), 0, "{what}: {s}");
        assert_eq!(counter(s, "local_lost"), 0, "{what}: {s}");
        assert_eq!(counter(s, "abandoned"), 0, "{what}: {s}");
        assert_eq!(counter(s, "late_joins"), 0, "{what}: {s}");
        assert_eq!(counter(s, "sessions"), 1, "{what}: {s}");
        assert_eq!(counter(s, "sessions_ended"), 1, "{what}: {s}");
        assert_eq!(counter(s, "stale_session"), 0, "{what}: {s}");
        assert_same_books(what, &o.replay_book, &r.book);
    }
    // Every message recovered was sent again by the sender.
    let recovered =
        counter(&o.rx(RX1).summary, "recovered") + counter(&o.rx(RX2).summary, "recovered");
    assert!(
        counter(&o.send, "retransmit_messages") >= recovered,
        "{} / recovered {recovered}",
        o.send
    );
}

// ---------------------------------------------------------------------------------------------
// The cases

#[test]
fn clean_two_receivers_get_the_stream_byte_for_byte() {
    let net = Net::new();
    let o = run(&net, &Spec::default(), |_, _| {});
    assert_all_delivered(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        for c in [
            "gaps",
            "requests",
            "recovered",
            "duplicates",
            "malformed",
            "foreign_session",
        ] {
            assert_eq!(counter(s, c), 0, "{c}: {s}");
        }
        assert!(counter(s, "packets") >= counter(&o.send, "packets"), "{s}");
    }
    assert_eq!(counter(&o.send, "requests"), 0);
    assert!(counter(&o.send, "end_of_session") >= 1);
}

#[test]
fn nftables_loss_of_one_and_five_percent_is_recovered() {
    let net = Net::new();
    let rule = |pct: u32| format!("udp dport {PORT} numgen random mod 100 < {pct} counter drop");
    net.nft(RX1, &[&rule(1)]);
    net.nft(RX2, &[&rule(5)]);
    let spec = Spec {
        rx1: JOIN_START,
        rx2: JOIN_START,
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_all_delivered(&o);
    let (dropped1, dropped2) = (net.nft_counted(RX1), net.nft_counted(RX2));
    // 5% of some 760 datagrams: never none.
    assert!(dropped2 > 0, "nftables dropped nothing at rx2");
    for (h, dropped) in [(RX1, dropped1), (RX2, dropped2)] {
        let s = &o.rx(h).summary;
        if dropped > 0 {
            assert!(counter(s, "gaps") > 0, "{dropped} dropped: {s}");
            assert!(counter(s, "requests") > 0, "{dropped} dropped: {s}");
            assert!(counter(s, "recovered") > 0, "{dropped} dropped: {s}");
            assert!(counter(s, "packets_recovery") > 0, "{dropped} dropped: {s}");
        }
    }
    assert!(counter(&o.send, "requests") > 0, "{}", o.send);
    assert_eq!(counter(&o.send, "not_available"), 0, "{}", o.send);
    eprintln!("nftables dropped {dropped1} and {dropped2} datagrams");
}

#[test]
fn a_burst_of_loss_mid_stream_is_recovered_from_the_store() {
    let net = Net::new();
    // Datagrams 201 to 300 of the group port, all of them: a burst in the middle of ~760.
    net.nft(
        RX1,
        &[&format!(
            "udp dport {PORT} numgen inc mod 1000000 200-299 counter drop"
        )],
    );
    let o = run(&net, &Spec::default(), |_, _| {});
    assert_all_delivered(&o);
    assert_eq!(net.nft_counted(RX1), 100, "the burst dropped 100 datagrams");
    let s = &o.rx(RX1).summary;
    // Each of the 100 datagrams carried at least one message.
    assert!(counter(s, "recovered") >= 100, "{s}");
    assert!(counter(s, "requests") > 0, "{s}");
    assert!(
        counter(s, "out_of_order") > 0,
        "later packets waited for the burst: {s}"
    );
    let s2 = &o.rx(RX2).summary;
    assert_eq!(counter(s2, "recovered"), 0, "rx2 lost nothing: {s2}");
}

/// Drops the first data datagram of the group port (heartbeats and the end of session carry
/// no message: 20 bytes of UDP payload, 28 with the UDP header).
fn drop_first_data_datagram(net: &Net, h: usize) {
    net.nft(
        h,
        &[&format!(
            "udp dport {PORT} udp length > 28 numgen inc mod 1000000 0 counter drop"
        )],
    );
}

/// No heartbeats (the first datagram is the first data packet), re-requests answered for a
/// while.
const NO_HEARTBEATS: &[&str] = &["--linger-ms", "1000", "--heartbeat-ms", "60000"];

#[test]
fn losing_the_first_datagram_is_recovered_with_join_start() {
    let net = Net::new();
    drop_first_data_datagram(&net, RX1);
    drop_first_data_datagram(&net, RX2);
    let spec = Spec {
        send: NO_HEARTBEATS,
        rx1: JOIN_START,
        rx2: JOIN_START,
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_all_delivered(&o);
    for h in [RX1, RX2] {
        assert_eq!(net.nft_counted(h), 1, "one datagram dropped");
        let s = &o.rx(h).summary;
        assert!(counter(s, "recovered") >= 1, "{s}");
        assert_eq!(counter(s, "gaps"), 1, "{s}");
    }
}

/// A receiver listening before the session began is not late: losing the session's first
/// datagram is a gap to recover, as it is with `--join start`.
#[test]
fn a_receiver_up_before_the_session_recovers_a_lost_first_datagram() {
    let net = Net::new();
    drop_first_data_datagram(&net, RX1);
    let spec = Spec {
        send: NO_HEARTBEATS,
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_eq!(net.nft_counted(RX1), 1, "one datagram dropped");
    assert_all_delivered(&o);
    assert!(counter(&o.rx(RX1).summary, "recovered") >= 1);
}

#[test]
fn reordering_and_duplication_from_the_fault_injector() {
    let net = Net::new();
    let spec = Spec {
        send: &[
            "--linger-ms",
            "1000",
            "--fault",
            "dup=0.05,reorder=0.05,delay=3,seed=7",
        ],
        // The first datagram may be held back or dropped too: not a late join.
        rx1: JOIN_START,
        rx2: &[
            "--join",
            "start",
            "--fault",
            "drop=0.02,dup=0.03,reorder=0.05,delay=2,seed=9",
        ],
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_all_delivered(&o);
    assert_eq!(counter(&o.send, "fault_dropped"), 0);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert!(counter(s, "duplicates") > 0, "{s}");
        assert!(counter(s, "out_of_order") > 0, "{s}");
    }
    let s2 = &o.rx(RX2).summary;
    assert!(counter(s2, "fault_dropped") > 0, "{s2}");
    assert!(counter(s2, "recovered") > 0, "{s2}");
}

#[test]
fn loss_beyond_a_tiny_store_becomes_exact_gap_notices() {
    let net = Net::new();
    let dropped_seqs = [1000u64, 5000, 5001];
    let spec = Spec {
        send: &[
            "--linger-ms",
            "1000",
            "--store-messages",
            "64",
            "--fault",
            "drop-seq=1000,drop-seq=5000-5001,seed=1",
        ],
        // Re-requested long after the store moved on.
        rx1: &["--nak-delay-us", "200000"],
        rx2: &["--nak-delay-us", "200000"],
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    let total = o.stream.len() as u64;
    let missing = counter(&o.send, "fault_dropped");
    assert!(
        missing >= 2,
        "the packets of 1000 and 5000-5001: {}",
        o.send
    );
    assert!(counter(&o.send, "not_available") >= 1, "{}", o.send);
    let mut notices = Vec::new();
    for (h, what) in [(RX1, "rx1"), (RX2, "rx2")] {
        let r = o.rx(h);
        let s = &r.summary;
        assert_eq!(r.epochs.len(), 1, "{what}: one local epoch");
        let w = walk(what, &r.epochs[0], &o.stream);
        // Every message exactly once: delivered, or inside exactly one notice.
        assert_eq!(w.next, total + 1, "{what}: the walk reaches the end: {w:?}");
        let lost: u64 = w.gaps.iter().map(|g| g.1).sum();
        assert_eq!(w.delivered + lost, total, "{what}");
        assert_eq!(
            lost, missing,
            "{what}: the notices cover what the injector dropped"
        );
        assert_eq!(counter(s, "unrecoverable"), lost, "{what}: {s}");
        assert_eq!(counter(s, "messages"), w.delivered, "{what}: {s}");
        // Each notice covers dropped sequence numbers, each dropped one is in a notice.
        for &(first, count) in &w.gaps {
            assert!(
                dropped_seqs
                    .iter()
                    .any(|s| (first..first + count).contains(s)),
                "{what}: notice {first}+{count} covers none of {dropped_seqs:?}"
            );
        }
        for s in dropped_seqs {
            assert!(
                w.gaps.iter().any(|&(f, c)| (f..f + c).contains(&s)),
                "{what}: message {s} is in no notice: {:?}",
                w.gaps
            );
        }
        notices.push(w.gaps);
    }
    assert_eq!(
        notices[0], notices[1],
        "the sender's loss, the same at both receivers"
    );
}

#[test]
fn a_restarted_sender_is_a_new_session_in_a_new_local_epoch() {
    let net = Net::new();
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    let mut rx = [
        start_recv(&net, RX1, "rx1", &[]),
        start_recv(&net, RX2, "rx2", &[]),
    ];
    let send_args = ["--linger-ms", "1000"];
    let (mut first, s1) = start_send(&net, "send1", &send_args);
    // Paced, and paused while the sender is replaced, so the stream is still running when the
    // sender dies and the new one starts.
    let mut replay = start_replay(&net, "5000/s");
    for (h, p) in [RX1, RX2].into_iter().zip(&mut rx) {
        wait_delivered(&net, h, 1000, p);
    }
    pause(&mut replay);
    // Dies without an end of session; a new sender takes over and starts from the oldest record.
    first.assert_running();
    first.child.kill().expect("kill the first sender");
    first.wait();
    let (mut second, s2) = start_send(&net, "send2", &send_args);
    assert!(s2 > s1, "the new session {s2} sorts after the old {s1}");
    replay.signal(libc::SIGCONT);
    let replayed = replay.wait_ok();
    let outs = rx.each_mut().map(|p| p.wait_ok());
    let sent = send_summary(&second.wait_ok());
    let stream = sender_stream(&net);
    let total = stream.len() as u64;
    assert_eq!(sent["session"], s2.as_str());
    assert_eq!(counter(&sent, "messages"), total, "{sent}");
    let [r1, r2] = readers;
    let epochs = [r1.finish(), r2.finish()];
    for ((what, done), epochs) in ["rx1", "rx2"].into_iter().zip(&outs).zip(epochs) {
        let r = recv_out(what, done, epochs);
        let s = &r.summary;
        assert_eq!(counter(s, "sessions"), 2, "{what}: {s}");
        assert_eq!(counter(s, "sessions_ended"), 1, "{what}: {s}");
        assert_eq!(r.epochs.len(), 2, "{what}: a local epoch per session");
        // The first session: a prefix of the stream (and a notice of what it still missed,
        // if anything), none of the second's records.
        let w1 = walk(&format!("{what} epoch 1"), &r.epochs[0], &stream);
        assert!(w1.delivered >= 1000, "{what}: {w1:?}");
        assert!(
            w1.next <= total,
            "{what}: the first sender died before the end: {w1:?}"
        );
        let abandoned: u64 = w1.gaps.iter().map(|g| g.1).sum();
        assert_eq!(counter(s, "abandoned"), abandoned, "{what}: {s}");
        // The second session from its start: everything, exactly once.
        assert_complete(&format!("{what} epoch 2"), &r.epochs[1], &stream);
        assert_eq!(counter(s, "messages"), w1.delivered + total, "{what}: {s}");
        assert_eq!(counter(s, "late_joins"), 0, "{what}: {s}");
        assert_eq!(counter(s, "unrecoverable"), 0, "{what}: {s}");
    }
    replay_book(&replayed);
}

#[test]
fn a_restarted_receiver_joins_late_and_says_so() {
    let net = Net::new();
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    let mut first = start_recv(&net, RX1, "rx1-first", &[]);
    let mut rx2 = start_recv(&net, RX2, "rx2", &[]);
    let (mut tx, _session) = start_send(&net, "send", &["--linger-ms", "1000"]);
    // Paced, and paused while the receiver restarts, so it joins a running session.
    let mut replay = start_replay(&net, "5000/s");
    wait_delivered(&net, RX1, 1000, &mut first);
    pause(&mut replay);
    first.signal(libc::SIGTERM);
    let before = json_lines("rx1-first", &first.wait_ok().out);
    let m1 = counter(&before[0], "messages");
    let mut again = start_recv(&net, RX1, "rx1-again", &[]);
    replay.signal(libc::SIGCONT);
    let replayed = replay.wait_ok();
    let after = again.wait_ok();
    let d2 = rx2.wait_ok();
    let sent = send_summary(&tx.wait_ok());
    let stream = sender_stream(&net);
    let total = stream.len() as u64;
    assert_eq!(counter(&sent, "messages"), total);
    let [r1, r2] = readers;
    let (e1, e2) = (r1.finish(), r2.finish());

    // The first receiver's epoch: what it delivered before it was stopped, from the start.
    assert_eq!(e1.len(), 2, "an epoch per receiver run");
    let w1 = walk("rx1 first run", &e1[0], &stream);
    assert_eq!((w1.delivered, w1.gaps.as_slice()), (m1, &[][..]), "{w1:?}");
    // The second: a notice of everything before its first message, then the rest.
    let again = recv_out("rx1-again", &after, vec![e1[1].clone()]);
    let s = &again.summary;
    let Some(&Item::Gap { first, count }) = again.epochs[0].first() else {
        panic!("the late receiver's stream starts with a gap notice");
    };
    assert_eq!(first, 1);
    assert!(
        count >= m1,
        "joined after the first run stopped: {count} < {m1}"
    );
    assert_eq!(counter(s, "late_joins"), 1, "{s}");
    assert_eq!(counter(s, "late_join_messages"), count, "{s}");
    let w = walk("rx1 second run", &again.epochs[0], &stream);
    assert_eq!(w.gaps, [(1, count)], "only the late-join notice");
    assert_eq!(w.next, total + 1, "then every message to the end");
    assert_eq!(counter(s, "messages"), w.delivered, "{s}");
    assert_eq!(counter(s, "unrecoverable"), 0, "{s}");

    // The other receiver saw none of it.
    let rx2 = recv_out("rx2", &d2, e2);
    assert_eq!(rx2.epochs.len(), 1);
    assert_complete("rx2", &rx2.epochs[0], &stream);
    assert_same_books("rx2", &replay_book(&replayed), &rx2.book);
}

/// Sends junk to the group from the sender's host: `(malformed, foreign)` datagrams sent.
fn send_junk(ns: String, session: Session) -> (u64, u64) {
    thread::spawn(move || {
        enter_netns(&ns);
        let sock = UdpSocket::bind((host_ip(SND), 0)).expect("junk socket");
        let mut malformed = 0;
        let mut foreign = 0;
        let send = |bytes: &[u8]| {
            let n = sock.send_to(bytes, GROUP).expect("send junk");
            assert_eq!(n, bytes.len());
        };
        for i in 0..20u8 {
            // Shorter than a MoldUDP64 header.
            let short: Vec<u8> = (0..=i % 19).map(|k| k.wrapping_mul(37) ^ i).collect();
            send(&short);
            malformed += 1;
            // Header-sized garbage that names no session of ours.
            let mut garbage = vec![b'#'; 20 + usize::from(i)];
            garbage[10..]
                .iter_mut()
                .enumerate()
                .for_each(|(k, b)| *b = (k as u8) ^ i);
            send(&garbage);
            foreign += 1;
            // A packet of our session cut short inside its first message block, numbered far
            // ahead: it must not open a gap.
            let mut cut = [0u8; HEADER_LEN + 12];
            encode_header(&mut cut, session, 50_000_000 + u64::from(i), 3).expect("header");
            cut[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&200u16.to_be_bytes());
            send(&cut);
            malformed += 1;
            // A sound packet of another stream on the same group.
            let other = wire::session_name(wire::stream_tag("other"), wire::epoch_token_now());
            let mut buf = [0u8; 64];
            let mut b = PacketBuilder::new(&mut buf, other, 1 + u64::from(i)).expect("packet");
            b.push(b"\x01\0\0\0other stream").expect("message");
            let n = b.finish();
            send(&buf[..n]);
            foreign += 1;
        }
        (malformed, foreign)
    })
    .join()
    .expect("junk sender")
}

fn session_of(name: &str) -> Session {
    Session(name.as_bytes().try_into().expect("a 10-byte session name"))
}

#[test]
fn garbage_and_truncated_datagrams_are_counted_and_ignored() {
    let net = Net::new();
    let spec = Spec {
        speed: "10000/s",
        ..Spec::default()
    };
    let mut sent_junk = (0, 0);
    let o = run(&net, &spec, |net, session| {
        // Into a running session (the receivers follow it already).
        let deadline = Instant::now() + LIMIT;
        while [RX1, RX2]
            .iter()
            .any(|&h| live_counter(&net.root(h), "recv", "messages") < 100)
        {
            assert!(Instant::now() < deadline, "the receivers got no messages");
            thread::sleep(Duration::from_millis(2));
        }
        sent_junk = send_junk(net.ns(SND).to_owned(), session_of(session));
    });
    assert_all_delivered(&o);
    let (malformed, foreign) = sent_junk;
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert_eq!(counter(s, "malformed"), malformed, "{s}");
        assert_eq!(counter(s, "foreign_session"), foreign, "{s}");
        assert_eq!(counter(s, "gaps"), 0, "junk opened no gap: {s}");
        assert_eq!(counter(s, "requests"), 0, "{s}");
    }
}

/// What a re-request flood got.
#[derive(Debug, Default)]
struct Flood {
    requests: u64,
    junk: u64,
    /// Messages in the answers the flooder read.
    answered: u64,
    /// From the first request to the last read.
    elapsed: Duration,
}

/// Floods the sender's retransmission server from the rogue host until `stop`.
fn flood(ns: String, session: Session, stop: Arc<AtomicBool>) -> JoinHandle<Flood> {
    thread::spawn(move || {
        enter_netns(&ns);
        let sock = UdpSocket::bind((host_ip(ROGUE), 0)).expect("flood socket");
        sock.set_nonblocking(true).expect("nonblocking");
        let server = SocketAddrV4::new(host_ip(SND), PORT + 1);
        let mut req = [0u8; HEADER_LEN];
        RequestPacket {
            session,
            sequence_number: 1,
            message_count: 1000,
        }
        .encode(&mut req)
        .expect("request");
        let mut junk = [0u8; HEADER_LEN];
        RequestPacket {
            session: Session(*b"XXXXXXXXXX"),
            sequence_number: 1,
            message_count: 10,
        }
        .encode(&mut junk)
        .expect("request");
        let mut f = Flood::default();
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        let mut read = |f: &mut Flood| {
            while let Ok(n) = sock.recv(&mut buf) {
                if n >= HEADER_LEN {
                    let count = u16::from_be_bytes([buf[18], buf[19]]);
                    if count != 0 && count != u16::MAX {
                        f.answered += u64::from(count);
                    }
                }
            }
        };
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..8 {
                // A full buffer only slows the flood down.
                if sock.send_to(&req, server).is_ok() {
                    f.requests += 1;
                }
                if sock.send_to(&junk, server).is_ok() && sock.send_to(&req[..7], server).is_ok() {
                    f.junk += 2;
                }
            }
            read(&mut f);
            // Some 12,000 datagrams a second (4,000 requests for 1,000 messages each): far
            // beyond the rate, yet not so many that a sender starved of cpu by a loaded test
            // machine overflows its socket and loses the real receivers' requests with them.
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(20));
        read(&mut f);
        f.elapsed = start.elapsed();
        f
    })
}

#[test]
fn a_re_request_flood_is_bounded_and_the_receivers_still_get_everything() {
    let net = Net::new();
    let rule = format!("udp dport {PORT} numgen random mod 100 < 3 counter drop");
    net.nft(RX1, &[&rule]);
    net.nft(RX2, &[&rule]);
    const RATE: u64 = 2000;
    /// The sender's default burst of answers per source (`SenderConfig::reply_burst`).
    const BURST: u64 = 20_000;
    let rate = RATE.to_string();
    let spec = Spec {
        send: &["--linger-ms", "1000", "--reply-rate", &rate],
        rx1: JOIN_START,
        rx2: JOIN_START,
        speed: "10000/s",
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooder = None;
    let o = run(&net, &spec, |net, session| {
        flooder = Some(flood(
            net.ns(ROGUE).to_owned(),
            session_of(session),
            stop.clone(),
        ));
    });
    stop.store(true, Ordering::Relaxed);
    let f = flooder.expect("flooded").join().expect("flooder");
    assert_all_delivered(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert!(counter(s, "recovered") > 0, "3% loss was recovered: {s}");
    }
    let s = &o.send;
    assert!(f.requests > 1000, "{f:?}");
    assert!(counter(s, "rate_limited") > 0, "{s} {f:?}");
    assert!(counter(s, "bad_requests") > 0, "{s} {f:?}");
    // What the server counted came from the flooder or the two receivers.
    let rx_requests: u64 = [RX1, RX2]
        .iter()
        .map(|&h| counter(&o.rx(h).summary, "requests"))
        .sum();
    assert!(
        counter(s, "requests") <= f.requests + f.junk + rx_requests,
        "{s} {f:?}"
    );
    // The flooder got its burst, then no more than the rate allows.
    let allowed = BURST + (RATE as f64 * f.elapsed.as_secs_f64()).ceil() as u64;
    assert!(f.answered > 0, "the first requests were answered: {f:?}");
    assert!(f.answered <= allowed, "{f:?} allowed {allowed}");
    // And the sender as a whole answered no more than three sources may get in its lifetime.
    let all = 3 * (BURST + (RATE as f64 * o.send_lifetime.as_secs_f64()).ceil() as u64);
    assert!(
        counter(s, "retransmit_messages") <= all,
        "{s} allowed {all}"
    );
    assert!(
        (f.requests as f64) * 1000.0 > 2.0 * allowed as f64,
        "the flood asked for far more than it may get: {f:?}"
    );
}

#[test]
fn tshark_decodes_the_session_sequences_and_counts() {
    let net = Net::new();
    let cap = net.file("rx2.pcapng");
    let cap_s = cap.display().to_string();
    let filter = format!("udp port {PORT}");
    let mut tshark = Proc::spawn(
        &net,
        "tshark",
        Some(RX2),
        Some("tshark"),
        &strings(&["-i", "eth0", "-f", &filter, "-w", &cap_s]),
    );
    let deadline = Instant::now() + LIMIT;
    while !tshark.stderr().contains("Capturing on") {
        tshark.assert_running();
        assert!(
            Instant::now() < deadline,
            "tshark did not start: {}",
            tshark.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let o = run(&net, &Spec::default(), |_, _| {});
    assert_all_delivered(&o);
    // Let the last repeats of the end of session in, then stop the capture.
    thread::sleep(Duration::from_millis(100));
    tshark.signal(libc::SIGINT);
    tshark.wait_ok();
    let decode = format!("udp.port=={PORT},moldudp64");
    let fields = host_cmd(
        "tshark",
        &[
            "-r",
            &cap_s,
            "-d",
            &decode,
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "moldudp64.session",
            "-e",
            "moldudp64.sequence",
            "-e",
            "moldudp64.count",
        ],
        None,
    );
    let total = counter(&o.send, "messages");
    let (mut next, mut data_packets, mut messages, mut ends) = (1u64, 0u64, 0u64, 0u64);
    for line in fields.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 3, "session, sequence, count: {line:?}");
        assert_eq!(f[0], o.session, "tshark's session: {line:?}");
        let seq: u64 = f[1].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let count: u64 = f[2].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        match count {
            // A heartbeat or the end of session: the next sequence number.
            0 | 0xFFFF => {
                assert_eq!(seq, next, "{line:?}");
                ends += u64::from(count == 0xFFFF);
            }
            _ => {
                assert_eq!(seq, next, "data packets in order, none missing: {line:?}");
                next += count;
                messages += count;
                data_packets += 1;
            }
        }
    }
    assert_eq!(
        messages, total,
        "tshark counted the messages the sender reported"
    );
    assert_eq!(next, total + 1);
    assert_eq!(data_packets, counter(&o.send, "packets"));
    assert!(ends >= 1, "tshark saw the end of session");
}
