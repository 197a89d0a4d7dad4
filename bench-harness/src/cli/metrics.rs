//! `mdbus stat --serve ADDR`: the counters of every role under a bus root on `/metrics`, in the
//! Prometheus text format (OpenMetrics 1.0, as `prometheus-client` encodes it).
//!
//! Each scrape reads the counters files afresh (`mdbus_shm::counters::list_counters`), so the
//! server holds no state and a role that starts or ends shows up or drops out at the next scrape.
//! One family per counter name, one sample per running role:
//!
//! ```text
//! # HELP mdbus_packets Counter `packets` of the mdbus roles that publish it (see `mdbus stat`).
//! # TYPE mdbus_packets counter
//! mdbus_packets_total{role="recv",stream="itch",pid="4242"} 120377
//! ```
//!
//! A counter name is made a metric name by replacing what Prometheus does not allow with `_`
//! (`sequencer.gaps` becomes `mdbus_sequencer_gaps`). Besides the counters: `mdbus_up` (1 while
//! the role's process lives, 0 once it died without finishing), `mdbus_start_time_seconds` and
//! `mdbus_last_publish_seconds` (Unix time). Roles that finished cleanly are left out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdbus_shm::counters::{CounterSnapshot, list_counters};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A counter or file name as a Prometheus metric name component: `[a-zA-Z0-9_]`, other bytes
/// replaced by `_`.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The labels of one role's samples.
fn labels(s: &CounterSnapshot) -> Vec<(String, String)> {
    vec![
        ("role".to_owned(), s.role.clone()),
        ("stream".to_owned(), s.stream.clone()),
        ("pid".to_owned(), s.pid.to_string()),
    ]
}

/// A gauge every role has: its name (after `mdbus_`), its help, and how to read it.
type Gauge = (&'static str, &'static str, fn(&CounterSnapshot) -> f64);

/// One scrape: the snapshots of the roles that have not finished.
#[derive(Debug)]
struct Scrape(Vec<CounterSnapshot>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauges: [Gauge; 3] = [
            (
                "up",
                "1 while the role's process lives, 0 once it died without finishing.",
                |s| f64::from(u8::from(s.alive)),
            ),
            (
                "start_time_seconds",
                "When the role started (Unix time).",
                |s| s.started_unix_ns as f64 / 1e9,
            ),
            (
                "last_publish_seconds",
                "When the role last published its counters (Unix time).",
                |s| s.updated_unix_ns as f64 / 1e9,
            ),
        ];
        for (name, help, value) in gauges {
            let name = format!("mdbus_{name}");
            let mut family = encoder.encode_descriptor(
                &name,
                help,
                None,
                ConstGauge::new(0.0f64).metric_type(),
            )?;
            for s in &self.0 {
                ConstGauge::new(value(s)).encode(family.encode_family(&labels(s))?)?;
            }
        }
        // Counter name -> the roles that publish it, in the order of the snapshots.
        let mut families: BTreeMap<String, Vec<(&CounterSnapshot, u64)>> = BTreeMap::new();
        for s in &self.0 {
            for (name, value) in &s.counters {
                families
                    .entry(metric_name(name))
                    .or_default()
                    .push((s, *value));
            }
        }
        for (name, samples) in &families {
            let help =
                format!("Counter `{name}` of the mdbus roles that publish it (see `mdbus stat`).");
            let name = format!("mdbus_{name}");
            let mut family = encoder.encode_descriptor(
                &name,
                &help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (s, value) in samples {
                ConstCounter::new(*value).encode(family.encode_family(&labels(s))?)?;
            }
        }
        Ok(())
    }
}

/// The text a scrape of `snapshots` returns (finished roles left out).
pub fn render(snapshots: Vec<CounterSnapshot>) -> String {
    let running = snapshots.into_iter().filter(|s| !s.finished).collect();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(running)));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Serves `/metrics` for the counters under `root` on `addr` until `stop` is set; prints the
/// address it listens on (with port 0, the one the system chose) on stderr. Anything but
/// `GET /metrics` gets 404.
pub fn serve(addr: SocketAddr, root: &Path, stop: &AtomicBool) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("--serve {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| addr.to_string(), |a| a.to_string());
    tracing::info!("mdbus stat: serving http://{bound}/metrics");
    while !stop.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return Err(format!("--serve {bound}: {e}")),
        };
        let path = request.url().split('?').next().unwrap_or("");
        let response = if *request.method() == tiny_http::Method::Get && path == "/metrics" {
            let body = match list_counters(root) {
                Ok((snaps, errors)) => {
                    for e in errors {
                        tracing::warn!("mdbus stat: {e}");
                    }
                    render(snaps)
                }
                Err(e) => {
                    let _ = request.respond(
                        tiny_http::Response::from_string(format!("{e}\n")).with_status_code(500),
                    );
                    continue;
                }
            };
            let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                .map_err(|()| "content type header".to_owned())?;
            tiny_http::Response::from_string(body).with_header(header)
        } else {
            tiny_http::Response::from_string("only GET /metrics is served\n").with_status_code(404)
        };
        // A scraper that hung up is its own problem.
        let _ = request.respond(response);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(
        role: &str,
        stream: &str,
        pid: u32,
        alive: bool,
        counters: &[(&str, u64)],
    ) -> CounterSnapshot {
        CounterSnapshot {
            path: format!("/r/{stream}.{role}.stat").into(),
            stream: stream.into(),
            role: role.into(),
            detail: String::new(),
            pid,
            started_unix_ns: 1_700_000_000_000_000_000,
            updated_unix_ns: 1_700_000_001_500_000_000,
            updates: 3,
            finished: false,
            alive,
            counters: counters
                .iter()
                .map(|(n, v)| ((*n).to_owned(), *v))
                .collect(),
        }
    }

    #[test]
    fn one_family_per_counter_with_a_sample_per_role() {
        let mut done = snap("record", "itch", 9, false, &[("records", 5)]);
        done.finished = true;
        let text = render(vec![
            snap(
                "send",
                "itch",
                10,
                true,
                &[("packets", 42), ("bytes", 9000)],
            ),
            snap(
                "feed",
                "itch",
                11,
                false,
                &[("packets", 7), ("sequencer.gaps", 2)],
            ),
            done,
        ]);
        assert!(text.contains("# TYPE mdbus_packets counter\n"), "{text}");
        assert!(text.contains("# HELP mdbus_packets "), "{text}");
        assert!(
            text.contains("mdbus_packets_total{role=\"send\",stream=\"itch\",pid=\"10\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("mdbus_packets_total{role=\"feed\",stream=\"itch\",pid=\"11\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("mdbus_sequencer_gaps_total{role=\"feed\""),
            "{text}"
        );
        assert!(
            text.contains("mdbus_up{role=\"send\",stream=\"itch\",pid=\"10\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mdbus_up{role=\"feed\",stream=\"itch\",pid=\"11\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("role=\"record\""),
            "a finished role is left out: {text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# TYPE mdbus_packets ").count(), 1, "{text}");
    }

    #[test]
    fn names_prometheus_does_not_allow_become_underscores() {
        assert_eq!(
            metric_name("pipeline.drop-notices"),
            "pipeline_drop_notices"
        );
        assert_eq!(metric_name("ok_1"), "ok_1");
    }
}
