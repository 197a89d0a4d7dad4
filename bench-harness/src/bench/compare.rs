//! `mdbus bench compare A.json B.json`: per-system ratios B/A of two reports (`--json` of
//! `bench ring`, `bench replay`, ...), or of two `bench all --json` documents scenario by
//! scenario (a single report against an `all` document is compared with the scenario of its
//! name).

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

/// Reads a JSON file.
fn read_json(path: &Path) -> Result<Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::BadReport {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn load(path: &Path) -> Result<Value, BenchError> {
    let v = read_json(path)?;
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
    let (systems, unmatched) = compare_values(&va, &vb);
    Ok(Comparison {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        systems,
        unmatched,
    })
}

/// Per-system ratios of two report objects, and the systems in only one of them.
fn compare_values(va: &Value, vb: &Value) -> (Vec<SystemRatios>, Vec<String>) {
    let ra = results(va);
    let rb = results(vb);
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
    (systems, unmatched)
}

/// The ratios of one scenario present in both `all` documents.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRatios {
    /// The scenario.
    pub scenario: String,
    /// One entry per system present in both, in B's order.
    pub systems: Vec<SystemRatios>,
    /// Systems in only one of the two.
    pub unmatched: Vec<String>,
}

/// The comparison of two `bench all` documents (or of one and a single report).
#[derive(Debug, Clone, Serialize)]
pub struct AllComparison {
    /// Path of the baseline.
    pub a: PathBuf,
    /// Path of the candidate.
    pub b: PathBuf,
    /// One entry per scenario present (and not failed) in both, in B's order.
    pub scenarios: Vec<ScenarioRatios>,
    /// Scenarios in only one of the two, or failed in either.
    pub unmatched: Vec<String>,
}

/// The comparison `bench compare` prints: of two reports, or of two `all` documents.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AnyComparison {
    /// Two single reports.
    One(Comparison),
    /// At least one `bench all` document.
    All(AllComparison),
}

impl AnyComparison {
    /// The readable table.
    pub fn table(&self) -> String {
        match self {
            AnyComparison::One(c) => c.table(),
            AnyComparison::All(c) => c.table(),
        }
    }
}

/// The reports of a `bench all` document, by scenario in its order; `None` for anything else.
fn scenarios_of(v: &Value) -> Option<Vec<(String, &Value)>> {
    let map = v.get("scenarios")?.as_object()?;
    let mut names: Vec<String> = v
        .get("order")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for k in map.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    Some(
        names
            .into_iter()
            .filter_map(|n| map.get(&n).map(|r| (n, r)))
            .collect(),
    )
}

/// Compares `b` against baseline `a`: two reports (as [`compare`]), or two `bench all`
/// documents scenario by scenario, or one of each (the report against the `all` document's
/// scenario of the report's name).
pub fn compare_any(a: &Path, b: &Path) -> Result<AnyComparison, BenchError> {
    let va = read_json(a)?;
    let vb = read_json(b)?;
    let (sa, sb) = (scenarios_of(&va), scenarios_of(&vb));
    if sa.is_none() && sb.is_none() {
        return compare(a, b).map(AnyComparison::One);
    }
    let as_list = |path: &Path, v: &Value| -> Result<Vec<(String, Value)>, BenchError> {
        match scenarios_of(v) {
            Some(list) => Ok(list.into_iter().map(|(n, r)| (n, r.clone())).collect()),
            None => {
                let v = load(path)?;
                let name = v
                    .get("scenario")
                    .and_then(Value::as_str)
                    .unwrap_or("ring")
                    .to_string();
                Ok(vec![(name, v)])
            }
        }
    };
    let la = as_list(a, &va)?;
    let lb = as_list(b, &vb)?;
    let usable = |r: &Value| r.get("results").is_some_and(Value::is_array);
    let mut scenarios = Vec::new();
    let mut unmatched = Vec::new();
    for (name, rb) in &lb {
        match la.iter().find(|(n, _)| n == name) {
            None => unmatched.push(format!("{name} (only in B)")),
            Some((_, ra)) if !usable(ra) || !usable(rb) => {
                unmatched.push(format!(
                    "{name} (no results in {})",
                    if usable(ra) { "B" } else { "A" }
                ));
            }
            Some((_, ra)) => {
                let (systems, unmatched) = compare_values(ra, rb);
                scenarios.push(ScenarioRatios {
                    scenario: name.clone(),
                    systems,
                    unmatched,
                });
            }
        }
    }
    for (name, _) in &la {
        if !lb.iter().any(|(n, _)| n == name) {
            unmatched.push(format!("{name} (only in A)"));
        }
    }
    Ok(AnyComparison::All(AllComparison {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        scenarios,
        unmatched,
    }))
}

/// The header line and the rows of one table of ratios.
fn ratio_rows(s: &mut String, systems: &[SystemRatios], unmatched: &[String]) {
    use std::fmt::Write as _;
    let _ = write!(s, "{:<18}", "system");
    for k in KEYS {
        let _ = write!(s, " {:>12}", k.trim_end_matches("_ns"));
    }
    s.push('\n');
    for sys in systems {
        let _ = write!(s, "{:<18}", sys.name);
        for r in &sys.ratios {
            let cell = r
                .ratio
                .map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
            let _ = write!(s, " {cell:>12}");
        }
        s.push('\n');
    }
    for u in unmatched {
        let _ = writeln!(s, "unmatched: {u}");
    }
}

impl AllComparison {
    /// The readable tables, one per scenario.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ratios B/A  (A = {}, B = {}); < 1 is lower latency, > 1 higher throughput for msgs/s",
            self.a.display(),
            self.b.display()
        );
        for sc in &self.scenarios {
            let _ = writeln!(s, "\n== {} ==", sc.scenario);
            ratio_rows(&mut s, &sc.systems, &sc.unmatched);
        }
        if !self.unmatched.is_empty() {
            s.push('\n');
        }
        for u in &self.unmatched {
            let _ = writeln!(s, "unmatched scenario: {u}");
        }
        s
    }
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
        ratio_rows(&mut s, &self.systems, &self.unmatched);
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
    fn all_documents_compare_scenario_by_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        let ring = dir.path().join("ring.json");
        std::fs::write(
            &a,
            r#"{"scenario":"all","order":["ring","replay","old"],"scenarios":{
              "ring":{"scenario":"ring","results":[{"name":"rtrb","p50_ns":100}]},
              "replay":{"scenario":"replay","results":[{"name":"mdbus-pipeline","msgs_per_sec":2e6}]},
              "old":{"scenario":"old","results":[]}}}"#,
        )
        .unwrap();
        std::fs::write(
            &b,
            r#"{"scenario":"all","order":["ring","replay","udp"],"scenarios":{
              "ring":{"scenario":"ring","results":[{"name":"rtrb","p50_ns":150}]},
              "replay":{"error":"failed"},
              "udp":{"scenario":"udp","results":[]}}}"#,
        )
        .unwrap();
        std::fs::write(
            &ring,
            r#"{"scenario":"ring","results":[{"name":"rtrb","p50_ns":50}]}"#,
        )
        .unwrap();
        let AnyComparison::All(c) = compare_any(&a, &b).unwrap() else {
            panic!("not an all comparison");
        };
        assert_eq!(c.scenarios.len(), 1);
        assert_eq!(c.scenarios[0].scenario, "ring");
        assert_eq!(c.scenarios[0].systems[0].ratios[0].ratio, Some(1.5));
        assert_eq!(
            c.unmatched,
            [
                "replay (no results in B)",
                "udp (only in B)",
                "old (only in A)"
            ]
        );
        let t = c.table();
        assert!(t.contains("== ring ==") && t.contains("1.500"), "{t}");

        // A single ring report against an all document: its scenario only.
        let AnyComparison::All(c) = compare_any(&ring, &a).unwrap() else {
            panic!("not an all comparison");
        };
        assert_eq!(c.scenarios.len(), 1);
        assert_eq!(c.scenarios[0].systems[0].ratios[0].ratio, Some(2.0));
        // Two single reports: the plain comparison.
        assert!(matches!(
            compare_any(&ring, &ring).unwrap(),
            AnyComparison::One(_)
        ));
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
