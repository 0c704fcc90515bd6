//! The two charts of `docs/benchmarks.md`, drawn as plain SVG from a suite JSON file
//! (`shardbus bench --suite --json PATH`): throughput by shard count beside the peers, and the
//! latency percentile curve beside the floors. No plotting dependency: a bar chart and a line
//! chart are a few dozen SVG elements.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{median, ReportError};
use crate::suite::{scaling_median, SuiteReport};

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Reads `suite_json` and writes `throughput-by-shards.svg` and `latency-percentiles.svg` into
/// `out`; returns their paths.
pub fn write_from_suite(suite_json: &Path, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let suite = SuiteReport::read(suite_json)?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| ReportError::Write {
            path: path.to_owned(),
            source,
        })
    };
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.to_owned(),
        source,
    })?;
    let m = &suite.machine;
    let machine = format!("{}, {} cores, {}", m.cpu, m.cores, m.date);
    let a = out.join("throughput-by-shards.svg");
    write(&a, throughput_chart(&suite, &machine))?;
    let b = out.join("latency-percentiles.svg");
    write(&b, latency_chart(&suite, &machine))?;
    Ok(vec![a, b])
}

/// Median rate of the series `name` in group `key`.
fn group_median(suite: &SuiteReport, key: &str, name: &str) -> Option<f64> {
    let group = suite.groups.iter().find(|g| g.key == key)?;
    let series = group.series.iter().find(|s| s.name == name)?;
    let rates: Vec<f64> = series.runs.iter().map(|r| r.msgs_per_sec).collect();
    median(&rates)
}

/// Median rate of the closed loop at `shards` shards and `work` rounds.
fn closed_loop_median(suite: &SuiteReport, shards: usize, work: u32) -> Option<f64> {
    let p = suite
        .scaling
        .iter()
        .find(|p| p.shards == shards && p.work == work)?;
    Some(scaling_median(p))
}

fn header(out: &mut String, title: &str, machine: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>
<text x="{x}" y="40" text-anchor="middle" fill="#555">{machine}</text>
"##,
        x = W / 2.0
    );
}

fn legend(out: &mut String, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let x = W - RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            COLORS[i % COLORS.len()],
            x + 18.0,
            y,
            escape(name)
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Grouped bars: x = shard count, one bar per runner, M msgs/s.
fn throughput_chart(suite: &SuiteReport, machine: &str) -> String {
    let names: Vec<String> = [
        "shardbus closed loop (work 0)",
        "shardbus closed loop (work 200)",
        "shardbus, 2 producers",
        "crossbeam_router, 2 producers",
        "seed, 2 producers (no shards)",
    ]
    .map(String::from)
    .to_vec();
    let mut values = vec![[0.0f64; 2]; names.len()];
    for (i, shards) in [1, 2].into_iter().enumerate() {
        let key = if shards == 1 {
            "oversub-1shard"
        } else {
            "oversub-uniform"
        };
        values[0][i] = closed_loop_median(suite, shards, 0).unwrap_or(0.0);
        values[1][i] = closed_loop_median(suite, shards, 200).unwrap_or(0.0);
        values[2][i] = group_median(suite, key, "shardbus").unwrap_or(0.0);
        values[3][i] = group_median(suite, key, "crossbeam_router").unwrap_or(0.0);
        values[4][i] = group_median(suite, key, "seed").unwrap_or(0.0);
    }
    let max = values
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(1.0)
        / 1e6;
    let top = nice_ceiling(max);
    let mut out = String::new();
    header(
        &mut out,
        "Throughput by shard count (M msgs/s, median of runs)",
        machine,
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP + 10.0);
    let y_of = |m: f64| y0 - (m / top) * (y0 - y1);
    for k in 0..=5 {
        let m = top * k as f64 / 5.0;
        let y = y_of(m);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{m:.1}</text>"##,
            x0 - 6.0,
            y + 4.0
        );
    }
    let group_w = (x1 - x0) / 2.0;
    let bar_w = group_w * 0.8 / names.len() as f64;
    for (gi, label) in ["1 shard", "2 shards"].iter().enumerate() {
        let gx = x0 + gi as f64 * group_w + group_w * 0.1;
        for (si, series) in values.iter().enumerate() {
            let m = series[gi] / 1e6;
            let x = gx + si as f64 * bar_w;
            let y = y_of(m);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{m:.2}</text>"#,
                bar_w - 2.0,
                y0 - y,
                COLORS[si % COLORS.len()],
                x + bar_w / 2.0 - 1.0,
                y - 3.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            x0 + gi as f64 * group_w + group_w / 2.0,
            y0 + 20.0
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#000"/><text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">M msgs/s</text>"##,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    legend(&mut out, &names);
    if let Some(m) = median(&suite.cpu_scaling) {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" fill="#555">host compute scaling,</text><text x="{}" y="{}" font-size="11" fill="#555">2 threads / 1 thread: {m:.2}x</text>"##,
            W - RIGHT + 15.0,
            TOP + 130.0,
            W - RIGHT + 15.0,
            TOP + 145.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Lines on a log-ns axis: x = percentile (50, 90, 99, 99.9, 99.99, max).
fn latency_chart(suite: &SuiteReport, machine: &str) -> String {
    let labels = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
    let series: Vec<(String, Vec<f64>)> = suite
        .latency
        .iter()
        .filter(|r| r.interval_us.is_none())
        .map(|r| {
            let p = &r.rtt_half;
            let pts = [p.p50, p.p90, p.p99, p.p999, p.p9999, p.max]
                .iter()
                .map(|&ns| (ns as f64).max(1.0))
                .collect();
            (r.name.clone(), pts)
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(10.0, f64::max);
    let (lo, hi) = (1.0f64, max.log10().ceil().max(2.0));
    let lo = lo.min(hi - 1.0);
    let mut out = String::new();
    header(
        &mut out,
        "Ping-pong latency, one way = RTT/2 (ns, log scale)",
        machine,
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP + 10.0);
    let y_of = |ns: f64| y0 - (ns.log10() - lo) / (hi - lo) * (y0 - y1);
    let x_of = |i: usize| x0 + 20.0 + i as f64 * (x1 - x0 - 40.0) / (labels.len() - 1) as f64;
    let mut decade = lo as i32;
    while f64::from(decade) <= hi {
        let ns = 10f64.powi(decade);
        let y = y_of(ns);
        let label = match decade {
            0..=2 => format!("{ns:.0} ns"),
            3..=5 => format!("{:.0} µs", ns / 1e3),
            _ => format!("{:.0} ms", ns / 1e6),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            x0 - 6.0,
            y + 4.0
        );
        decade += 1;
    }
    for (i, l) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{l}</text>"#,
            x_of(i),
            y0 + 20.0
        );
    }
    for (si, (_, pts)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .enumerate()
            .map(|(i, &ns)| format!("{:.1},{:.1}", x_of(i), y_of(ns)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (i, &ns) in pts.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x_of(i),
                y_of(ns)
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#000"/>"##
    );
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    legend(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

/// 1, 2 or 5 times a power of ten, at least `x`.
fn nice_ceiling(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= x)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Machine, Percentiles, RunSummary, Series};
    use crate::suite::{Group, LatencyRow, ScalingPoint, WorkloadDesc};

    #[test]
    fn charts_render_from_a_minimal_report() {
        let run = RunSummary {
            msgs_per_sec: 2e6,
            payload_mb_per_sec: 0.0,
            elapsed_s: 0.0,
            handled: 0,
            exact: true,
            duplicates: 0,
            missing: 0,
            order_violations: 0,
            unexpected: 0,
            latency: Percentiles::default(),
            per_thread_handled: vec![],
            consume: crate::Consume::Verify,
            checksum_mismatches: 0,
        };
        let suite = SuiteReport {
            machine: Machine {
                cpu: "x".into(),
                cores: 2,
                date: "d".into(),
                fences: "f".into(),
            },
            reps: 1,
            groups: vec![Group {
                key: "oversub-uniform".into(),
                title: "t".into(),
                workload: WorkloadDesc {
                    producers: 2,
                    topics: 64,
                    messages: 1,
                    payload: 16,
                    distribution: "uniform".into(),
                },
                shards: 2,
                series: vec![Series {
                    name: "shardbus".into(),
                    runs: vec![run],
                    error: None,
                }],
            }],
            scaling: vec![ScalingPoint {
                shards: 1,
                work: 0,
                msgs_per_sec: vec![1e6],
                per_shard_handled: vec![],
                exact: true,
            }],
            cpu_scaling: vec![],
            latency: vec![LatencyRow {
                name: "a".into(),
                interval_us: None,
                shards: 1,
                rtt_half: Percentiles {
                    samples: 1,
                    p50: 100,
                    p90: 120,
                    p99: 300,
                    p999: 900,
                    p9999: 5000,
                    max: 90000,
                },
                one_way: None,
                shard_cpu: vec![],
                p50s: vec![],
            }],
            legs: vec![],
            light: vec![],
            persist: None,
            targets: vec![],
        };
        let a = throughput_chart(&suite, "m");
        assert!(a.contains("<rect") && a.ends_with("</svg>\n"));
        let b = latency_chart(&suite, "m");
        assert!(b.contains("<polyline"));
        assert_eq!(nice_ceiling(3.2), 5.0);
    }
}
