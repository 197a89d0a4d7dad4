//! Reports: the JSON document, the readable table and HdrHistogram `.hgrm` files.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::host::HostInfo;

/// One system's figures in a ring run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemResult {
    /// `floor`, `mdbus-shm`, `rtrb` or `crossbeam-channel`.
    pub name: String,
    /// Message size in bytes.
    pub msg_bytes: usize,
    /// Latency samples recorded (after warm-up).
    pub count: u64,
    /// Smallest sample, ns.
    pub min_ns: u64,
    /// Mean, ns.
    pub mean_ns: f64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// 99.99th percentile, ns.
    pub p9999_ns: u64,
    /// Largest sample, ns.
    pub max_ns: u64,
    /// The median of each round's samples, in round order (shows drift, e.g. a virtual CPU
    /// moved to another physical core, which the interleaving spreads over all systems).
    pub round_p50_ns: Vec<u64>,
    /// Fixed-rate mode: messages lost to overruns of a broadcast ring (never recorded).
    pub lost: u64,
    /// Streaming throughput, messages per second (`null` where not measured).
    pub msgs_per_sec: Option<f64>,
    /// `p50_ns` divided by the floor's `p50_ns` from the same run.
    pub p50_vs_floor: Option<f64>,
    /// `p999_ns` divided by the floor's `p999_ns` from the same run.
    pub p999_vs_floor: Option<f64>,
}

impl SystemResult {
    /// Summarises a latency histogram.
    pub fn from_histogram(name: &str, msg_bytes: usize, h: &Histogram<u64>) -> SystemResult {
        let q = |x: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x)
            }
        };
        SystemResult {
            name: name.to_string(),
            msg_bytes,
            count: h.len(),
            min_ns: if h.is_empty() { 0 } else { h.min() },
            mean_ns: if h.is_empty() { 0.0 } else { h.mean() },
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            p9999_ns: q(0.9999),
            max_ns: if h.is_empty() { 0 } else { h.max() },
            round_p50_ns: Vec::new(),
            lost: 0,
            msgs_per_sec: None,
            p50_vs_floor: None,
            p999_vs_floor: None,
        }
    }
}

/// The parameters a ring run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingParams {
    /// `ping-pong` (one-way = RTT/2) or `fixed-rate` (one-way from the intended send time).
    pub mode: String,
    /// Message size in bytes.
    pub msg_bytes: usize,
    /// Latency samples per system.
    pub count: u64,
    /// Untimed messages before each system's timed part of every round.
    pub warmup: u64,
    /// Rounds the systems were interleaved in.
    pub rounds: u32,
    /// Fixed-rate mode: messages per second.
    pub rate: Option<u64>,
    /// Messages per system in the throughput phase (0: skipped).
    pub throughput_count: u64,
    /// Largest batch a throughput consumer takes at once.
    pub batch: usize,
    /// Ring capacity in bytes (mdbus-shm); rtrb and crossbeam get `capacity / msg_bytes` slots.
    pub capacity_bytes: usize,
    /// Slots of the rtrb and crossbeam channels.
    pub slots: usize,
    /// Mode of the mdbus-shm ring in the latency phase (`lossless` or `broadcast`); the
    /// throughput phase always uses a lossless ring, like rtrb and crossbeam.
    pub shm_mode: String,
    /// The systems, in the order of the first round.
    pub systems: Vec<String>,
}

/// The JSON document of `mdbus bench ring --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingReport {
    /// Always `ring`.
    pub scenario: String,
    /// One entry per system.
    pub results: Vec<SystemResult>,
    /// The machine.
    pub host: HostInfo,
    /// The core layout the threads were pinned by (`--layout`, `$MDBUS_LAYOUT`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::pinning::LayoutUse>,
    /// What was run.
    pub params: RingParams,
    /// Warnings (unpinned threads, clock fallback, ...).
    pub notes: Vec<String>,
}

/// The host line and one row per system (latency percentiles in ns, throughput, p50 against
/// the floor) of a readable report: `bench ring`, `bench udp`.
pub(crate) fn host_and_results(s: &mut String, h: &HostInfo, results: &[SystemResult]) {
    let _ = writeln!(
        s,
        "host: {} | {} cpus | kernel {} | governor {} | isolated [{}]",
        h.cpu_model, h.cpus_available, h.kernel, h.governor, h.isolated_cores
    );
    let _ = writeln!(
        s,
        "{:<19} {:>5} {:>9} {:>7} {:>7} {:>8} {:>8} {:>9} {:>12} {:>9}",
        "system", "bytes", "count", "p50", "p99", "p99.9", "p99.99", "max", "msgs/s", "p50/floor"
    );
    for r in results {
        let tp = r
            .msgs_per_sec
            .map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        let rf = r
            .p50_vs_floor
            .map_or_else(|| "-".to_string(), |v| format!("{v:.2}x"));
        let _ = writeln!(
            s,
            "{:<19} {:>5} {:>9} {:>7} {:>7} {:>8} {:>8} {:>9} {:>12} {:>9}",
            r.name,
            r.msg_bytes,
            r.count,
            r.p50_ns,
            r.p99_ns,
            r.p999_ns,
            r.p9999_ns,
            r.max_ns,
            tp,
            rf
        );
    }
}

fn ratio(x: f64, floor: f64) -> Option<f64> {
    (floor > 0.0).then(|| (x / floor * 100.0).round() / 100.0)
}

impl RingReport {
    /// Fills the `*_vs_floor` ratios from the `floor` entry, if there is one.
    pub fn fill_floor_ratios(&mut self) {
        let Some(f) = self.results.iter().find(|r| r.name == "floor").cloned() else {
            return;
        };
        for r in &mut self.results {
            r.p50_vs_floor = ratio(r.p50_ns as f64, f.p50_ns as f64);
            r.p999_vs_floor = ratio(r.p999_ns as f64, f.p999_ns as f64);
        }
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let h = &self.host;
        let what = match p.rate {
            Some(r) => format!("fixed rate {r} msgs/s, one-way from intended send time"),
            None => "one-way = RTT/2 by ping-pong".to_string(),
        };
        let _ = writeln!(
            s,
            "ring latency in ns ({what}); {} rounds; cores {:?}{}; clock {}",
            p.rounds,
            h.cores_used,
            if h.pinned { "" } else { " (NOT pinned)" },
            h.clock
        );
        host_and_results(&mut s, h, &self.results);
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// The classic HdrHistogram percentile distribution (`outputPercentileDistribution` with 5
/// ticks per half distance and values as recorded, here nanoseconds), as read by the standard
/// HdrHistogram plotter.
pub fn hgrm(h: &Histogram<u64>) -> String {
    const TICKS_PER_HALF_DISTANCE: u32 = 5;
    let mut s = String::new();
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean(), h.stdev(), h.max() as f64)
    };
    // Sub-buckets per bucket: the power of two above 2 * 10^digits (2048 for 3 digits).
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(s, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]");
    let _ = writeln!(
        s,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    );
    s
}

/// What a latency scenario writes once it has measured: one `.hgrm` file per system under
/// `hgrm_dir`, the chart at `plot` (titled `title`), then the JSON object (notes and the files
/// written go to stderr) or the table (followed by the files written).
pub(crate) struct Outputs<'a> {
    /// `--json`.
    pub json: bool,
    /// `--hgrm DIR`.
    pub hgrm_dir: Option<&'a std::path::Path>,
    /// `--plot FILE`.
    pub plot: Option<&'a std::path::Path>,
    /// The chart's title.
    pub title: String,
}

impl Outputs<'_> {
    /// Writes the outputs of a report whose systems are `results` with their histograms
    /// `hists`, in the same order.
    pub(crate) fn write<R: Serialize>(
        &self,
        out: &mut dyn std::io::Write,
        report: &R,
        table: String,
        notes: &[String],
        results: &[SystemResult],
        hists: &[Histogram<u64>],
    ) -> Result<(), super::BenchError> {
        use super::BenchError;
        use std::path::{Path, PathBuf};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BenchError::Io { path, source }
        };
        let mut written = Vec::new();
        if let Some(dir) = self.hgrm_dir {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            for (r, h) in results.iter().zip(hists) {
                let path = dir.join(format!("{}.hgrm", r.name));
                std::fs::write(&path, hgrm(h)).map_err(io(&path))?;
                written.push(path);
            }
        }
        if let Some(path) = self.plot {
            let series: Vec<(&str, &Histogram<u64>)> = results
                .iter()
                .zip(hists)
                .map(|(r, h)| (r.name.as_str(), h))
                .collect();
            super::plot::write_svg(path, &self.title, &series)?;
            written.push(path.to_path_buf());
        }
        let stdout_err = |source| BenchError::Io {
            path: PathBuf::from("<stdout>"),
            source,
        };
        if self.json {
            let text = serde_json::to_string(report)
                .map_err(|e| BenchError::Internal(format!("cannot serialise the report: {e}")))?;
            writeln!(out, "{text}").map_err(stdout_err)?;
            for n in notes {
                tracing::info!("note: {n}");
            }
            for p in &written {
                tracing::info!("wrote {}", p.display());
            }
        } else {
            write!(out, "{table}").map_err(stdout_err)?;
            for p in &written {
                writeln!(out, "wrote {}", p.display()).map_err(stdout_err)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_the_classic_shape() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let text = hgrm(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // The first row: the smallest value at percentile 0, the last: the max at 100%.
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first[0], "1.000");
        assert_eq!(first[1], "0.000000000000");
        let body: Vec<&&str> = lines.iter().filter(|l| !l.starts_with('#')).collect();
        let last: Vec<&str> = body.last().unwrap().split_whitespace().collect();
        assert_eq!(last.len(), 3, "last row has no 1/(1-p) column");
        assert_eq!(last[0], "1000.000");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        let n = lines.len();
        assert!(lines[n - 3].starts_with("#[Mean    =      500.500, StdDeviation   ="));
        assert_eq!(
            lines[n - 2],
            "#[Max     =     1000.000, Total count    =         1000]"
        );
        assert!(lines[n - 1].ends_with("SubBuckets     =         2048]"));
        // Counts never decrease down the table.
        let mut prev = 0u64;
        for l in body[1..].iter().filter(|l| !l.is_empty()) {
            let c: u64 = l.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert!(c >= prev);
            prev = c;
        }
    }

    #[test]
    fn floor_ratios_are_filled() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.record(100).unwrap();
        let mut f = SystemResult::from_histogram("floor", 64, &h);
        f.p50_ns = 50;
        let r = SystemResult::from_histogram("rtrb", 64, &h);
        let mut rep = RingReport {
            scenario: "ring".into(),
            results: vec![f, r],
            host: HostInfo::default(),
            layout: None,
            params: RingParams {
                mode: "ping-pong".into(),
                msg_bytes: 64,
                count: 1,
                warmup: 0,
                rounds: 1,
                rate: None,
                throughput_count: 0,
                batch: 1,
                capacity_bytes: 4096,
                slots: 64,
                shm_mode: "lossless".into(),
                systems: vec![],
            },
            notes: vec![],
        };
        rep.fill_floor_ratios();
        assert_eq!(rep.results[1].p50_vs_floor, Some(2.0));
        assert!(rep.table().contains("2.00x"));
    }
}
