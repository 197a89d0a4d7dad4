//! `mdbus bench compare A.json B.json`: per-system ratios B/A of two ring reports.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::BenchError;

/// The figures compared, as named in the ring report.
pub const KEYS: [&str; 6] = [
    "p50_ns",
    "p99_ns",
    "p999_ns",
    "p9999_ns",
    "max_ns",
    "msgs_per_sec",
];

/// One figure of one system in both reports.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The figure, one of [`KEYS`].
    pub key: String,
    /// Its value in A.
    pub a: Option<f64>,
    /// Its value in B.
    pub b: Option<f64>,
    /// B/A (`None`: missing in either, or zero in A).
    pub ratio: Option<f64>,
}

/// Ratios B/A for one system present in both reports.
#[derive(Debug, Clone, Serialize)]
pub struct SystemRatios {
    /// System name.
    pub name: String,
    /// One entry for each of [`KEYS`].
    pub ratios: Vec<Ratio>,
}

/// The comparison of two reports.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Path of the baseline.
    pub a: PathBuf,
    /// Path of the candidate.
    pub b: PathBuf,
    /// One entry per system present in both, in B's order.
    pub systems: Vec<SystemRatios>,
    /// Systems in only one of the two.
    pub unmatched: Vec<String>,
}

fn load(path: &Path) -> Result<Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| BenchError::BadReport {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !v.get("results").is_some_and(Value::is_array) {
        return Err(BenchError::BadReport {
            path: path.to_path_buf(),
            reason: "no \"results\" array (is this the output of `bench ring --json`?)".into(),
        });
    }
    Ok(v)
}

fn results(v: &Value) -> Vec<(String, &Value)> {
    v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r.get("name")?.as_str()?.to_string(), r)))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares report `b` against baseline `a`.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison, BenchError> {
    let va = load(a)?;
    let vb = load(b)?;
    let ra = results(&va);
    let rb = results(&vb);
    let mut systems = Vec::new();
    let mut unmatched = Vec::new();
    for (name, sb) in &rb {
        let Some((_, sa)) = ra.iter().find(|(n, _)| n == name) else {
            unmatched.push(format!("{name} (only in B)"));
            continue;
        };
        let ratios = KEYS
            .iter()
            .map(|k| {
                let x = sa.get(*k).and_then(Value::as_f64);
                let y = sb.get(*k).and_then(Value::as_f64);
                let r = match (x, y) {
                    (Some(x), Some(y)) if x > 0.0 => Some(y / x),
                    _ => None,
                };
                Ratio {
                    key: k.to_string(),
                    a: x,
                    b: y,
                    ratio: r,
                }
            })
            .collect();
        systems.push(SystemRatios {
            name: name.clone(),
            ratios,
        });
    }
    for (name, _) in &ra {
        if !rb.iter().any(|(n, _)| n == name) {
            unmatched.push(format!("{name} (only in A)"));
        }
    }
    Ok(Comparison {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        systems,
        unmatched,
    })
}

impl Comparison {
    /// The readable table: one row per system, one column per figure (B/A).
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ratios B/A  (A = {}, B = {}); < 1 is lower latency, > 1 higher throughput for msgs/s",
            self.a.display(),
            self.b.display()
        );
        let _ = write!(s, "{:<18}", "system");
        for k in KEYS {
            let _ = write!(s, " {:>12}", k.trim_end_matches("_ns"));
        }
        s.push('\n');
        for sys in &self.systems {
            let _ = write!(s, "{:<18}", sys.name);
            for r in &sys.ratios {
                let cell = r
                    .ratio
                    .map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
                let _ = write!(s, " {cell:>12}");
            }
            s.push('\n');
        }
        for u in &self.unmatched {
            let _ = writeln!(s, "unmatched: {u}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_matching_systems() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(
            &a,
            r#"{"scenario":"ring","results":[{"name":"rtrb","p50_ns":100,"p99_ns":200,"p999_ns":400,"p9999_ns":800,"max_ns":1000,"msgs_per_sec":1e6},{"name":"old","p50_ns":1}]}"#,
        )
        .unwrap();
        std::fs::write(
            &b,
            r#"{"scenario":"ring","results":[{"name":"rtrb","p50_ns":50,"p99_ns":200,"p999_ns":800,"p9999_ns":800,"max_ns":1000,"msgs_per_sec":null}]}"#,
        )
        .unwrap();
        let c = compare(&a, &b).unwrap();
        assert_eq!(c.systems.len(), 1);
        let r = &c.systems[0].ratios;
        assert_eq!(r[0].ratio, Some(0.5));
        assert_eq!(r[2].ratio, Some(2.0));
        assert_eq!(r[5].ratio, None);
        assert_eq!(c.unmatched, vec!["old (only in A)".to_string()]);
        assert!(c.table().contains("0.500"));
    }

    #[test]
    fn a_file_that_is_not_a_report_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        std::fs::write(&a, "{\"x\":1}").unwrap();
        let e = compare(&a, &a).unwrap_err().to_string();
        assert!(e.contains("a.json") && e.contains("results"), "{e}");
        let e = compare(&dir.path().join("missing.json"), &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }
}
