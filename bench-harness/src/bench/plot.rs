//! Latency-by-percentile chart in SVG, laid out like the HdrHistogram plotter: the x axis is
//! `1/(1-p)` on a log scale (labelled 50%, 90%, 99%, 99.9%, ...), the y axis latency in ns
//! (log scale too: a noisy host's maximum is orders of magnitude above its median).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::BenchError;

/// The points of one system's curve: (1/(1-p), latency ns), the last at `x_end` for the max.
pub fn curve(h: &Histogram<u64>, x_end: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let y = v.value_iterated_to().max(1) as f64;
        let x = if q < 1.0 { 1.0 / (1.0 - q) } else { x_end };
        pts.push((x.min(x_end), y));
    }
    pts
}

/// `1/(1-p)` as a percentile label: 1 -> "0%", 2 -> "50%", 10 -> "90%", 1000 -> "99.9%".
pub fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".to_string();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A fixed colour per known system (the floor black), a palette colour for others.
fn color_of(name: &str, i: usize) -> RGBAColor {
    match name {
        "floor" => BLACK.to_rgba(),
        "mdbus-shm" => RGBColor(214, 39, 40).to_rgba(),
        "rtrb" => RGBColor(31, 119, 180).to_rgba(),
        "crossbeam-channel" => RGBColor(44, 160, 44).to_rgba(),
        _ => Palette99::pick(i + 4).to_rgba(),
    }
}

/// Writes the chart of `series` (name, histogram) to `path` as SVG.
pub fn write_svg(
    path: &Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> Result<(), BenchError> {
    let err = |e: String| BenchError::Plot {
        path: path.to_path_buf(),
        reason: e,
    };
    let max_count = series
        .iter()
        .map(|(_, h)| h.len())
        .max()
        .unwrap_or(0)
        .max(10);
    // The x axis ends one decade past the last percentile the sample count resolves.
    let decades = (max_count as f64).log10().ceil().clamp(2.0, 9.0);
    let x_end = 10f64.powf(decades);
    let y_min = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.min().max(1))
        .min()
        .unwrap_or(1) as f64;
    let y_max = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.max().max(2))
        .max()
        .unwrap_or(1000) as f64;
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (1f64..x_end).log_scale(),
            ((y_min * 0.8).max(0.5)..y_max * 1.25).log_scale(),
        )
        .map_err(|e| err(e.to_string()))?;
    let label = |x: &f64| percentile_label(*x);
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ns)")
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (name, h)) in series.iter().enumerate() {
        let color = color_of(name, i);
        chart
            .draw_series(LineSeries::new(curve(h, x_end), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_percentiles() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
    }

    #[test]
    fn svg_has_one_line_per_system() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let mut a = Histogram::<u64>::new(3).unwrap();
        let mut b = Histogram::<u64>::new(3).unwrap();
        for v in 1..1000u64 {
            a.record(50 + v % 7).unwrap();
            b.record(100 + v).unwrap();
        }
        write_svg(&path, "t", &[("floor", &a), ("rtrb", &b)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("floor") && svg.contains("rtrb"));
        assert!(svg.contains("99.9%"));
        assert!(svg.matches("<polyline").count() >= 2);
        let pts = curve(&b, 1e4);
        assert_eq!(pts.first().unwrap().0, 1.0);
        assert_eq!(pts.last().unwrap().0, 1e4);
    }
}
