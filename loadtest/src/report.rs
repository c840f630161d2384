//! The HTML report: one self-contained page (no scripts, no external resources) with inline SVG
//! line charts of the per-second series, the summary table and the scenario.

use std::fmt::Write as _;

use crate::metrics::{EndpointSeries, SecondPoint};

/// Summary rows for layer switches (scenario `switches`): requested and observed per receiver,
/// and stream violations by kind over all receivers. Empty when no switches were requested.
pub fn switch_rows(endpoints: &[crate::endpoint::EndpointReport]) -> Vec<(String, String)> {
    if endpoints.iter().all(|e| e.switches_requested == 0) {
        return Vec::new();
    }
    let per: Vec<String> = endpoints
        .iter()
        .map(|e| {
            format!(
                "#{}: {}/{} ({} frames after the last)",
                e.index, e.switches_requested, e.switches_observed, e.frames_after_last_switch
            )
        })
        .collect();
    let mut kinds: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for e in endpoints {
        for (k, n) in &e.violation_kinds {
            *kinds.entry(k.as_str()).or_default() += n;
        }
    }
    let kinds = if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        ("switches requested/observed".into(), per.join(", ")),
        ("violations by kind".into(), kinds),
    ]
}

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// "Nice" tick step for a range (1, 2 or 5 × 10^k), about `n` ticks.
pub fn nice_step(range: f64, n: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The axis range for values up to `max` (from zero), rounded up to a tick.
pub fn axis_max(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let step = nice_step(max, 5.0);
    ((max / step).ceil() * step, step)
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart as an `<svg>` element: x and y from zero, ticks, labels and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let finite = |v: &f64| v.is_finite();
    let x_max_raw = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(finite)
        .fold(0.0, f64::max);
    let y_max_raw = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(finite)
        .fold(0.0, f64::max);
    let (x_max, x_step) = axis_max(x_max_raw);
    let (y_max, y_step) = axis_max(y_max_raw);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy = |y: f64| TOP + ph - y / y_max * ph;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11" data-x-max="{x_max}" data-y-max="{y_max}">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        LEFT,
        esc(title)
    );
    // Grid and ticks.
    let mut y = 0.0;
    while y <= y_max + y_step / 1e6 {
        let py = sy(y);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text class="ytick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            fmt_tick(y)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + x_step / 1e6 {
        let px = sx(x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#888"/><text class="xtick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 16.0,
            fmt_tick(x)
        );
        x += x_step;
    }
    // Axes and labels.
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#000"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>"##,
        TOP + ph,
        TOP + ph,
        LEFT + pw,
        TOP + ph
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 6.0,
        esc(x_label)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    // Lines: a gap where a value is missing (NaN).
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in &ser.points {
            if !(x.is_finite() && y.is_finite()) {
                pen_down = false;
                continue;
            }
            let _ = write!(d, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, sx(x), sy(y));
            pen_down = true;
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.6"/>"#,
                d.trim_end()
            );
        }
        let ly = TOP + 8.0 + i as f64 * 16.0;
        let lx = LEFT + pw + 12.0;
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 16.0,
            lx + 20.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Escape text for XML/HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// The charts for a run's series.
pub fn charts(series: &[SecondPoint]) -> Vec<String> {
    let t = |p: &SecondPoint| f64::from(p.t);
    let line = |name: &str, f: &dyn Fn(&SecondPoint) -> f64| Series {
        name: name.into(),
        points: series.iter().map(|p| (t(p), f(p))).collect(),
    };
    let mut out = vec![
        line_chart(
            "Media received by all endpoints",
            "time (s)",
            "Mbit/s",
            &[line("received Mbit/s", &|p| p.rx_mbps)],
        ),
        line_chart(
            "Packets per second",
            "time (s)",
            "packets/s",
            &[
                line("received", &|p| p.rx_pps as f64),
                line("sent", &|p| p.sent_pps as f64),
                line("bridge sent", &|p| {
                    p.bridge_forwarded_pps.map_or(f64::NAN, |v| v as f64)
                }),
            ],
        ),
        line_chart(
            "End-to-end latency",
            "time (s)",
            "ms",
            &[
                line("p50", &|p| opt(p.latency_ms_p50)),
                line("p95", &|p| opt(p.latency_ms_p95)),
                line("p99", &|p| opt(p.latency_ms_p99)),
            ],
        ),
    ];
    let mut heights: Vec<u32> = series.iter().flat_map(|p| p.layers.keys().copied()).collect();
    heights.sort_unstable();
    heights.dedup();
    if !heights.is_empty() {
        let layer_series: Vec<Series> = heights
            .iter()
            .map(|&h| Series {
                name: if h == 0 { "no video".into() } else { format!("{h}p") },
                points: series
                    .iter()
                    .map(|p| (t(p), f64::from(p.layers.get(&h).copied().unwrap_or(0))))
                    .collect(),
            })
            .collect();
        out.push(line_chart(
            "Layers received (receiver × sender pairs per height)",
            "time (s)",
            "pairs",
            &layer_series,
        ));
    }
    out.push(line_chart(
        "Loss and freezes",
        "time (s)",
        "% / count",
        &[
            line("loss %", &|p| p.loss_percent),
            line("freezes", &|p| p.freezes as f64),
        ],
    ));
    out.push(line_chart(
        "CPU (100 % = one core)",
        "time (s)",
        "%",
        &[
            line("bridge", &|p| opt(p.bridge_cpu_percent)),
            line("harness", &|p| opt(p.harness_cpu_percent)),
        ],
    ));
    out.push(line_chart(
        "Harness timer lag, p99 (how late endpoint tasks ran)",
        "time (s)",
        "ms",
        &[line("lag p99", &|p| opt(p.harness_lag_ms_p99))],
    ));
    out.push(line_chart(
        "Endpoints joined",
        "time (s)",
        "endpoints",
        &[line("endpoints", &|p| f64::from(p.endpoints))],
    ));
    out
}

/// One receiver's charts, by kind (`rate`, `layer`, `loss`): received bitrate with the
/// bridge's estimate and the emulated capacity; the layer height received; loss per 1 s window.
pub fn receiver_charts(r: &EndpointSeries) -> Vec<(&'static str, String)> {
    let line = |name: &str, f: &dyn Fn(&crate::metrics::EndpointPoint) -> f64| Series {
        name: name.into(),
        points: r.points.iter().map(|p| (f64::from(p.t), f(p))).collect(),
    };
    let mut rate = vec![line("received", &|p| p.rx_kbps)];
    if r.points.iter().any(|p| p.bwe_kbps.is_some()) {
        rate.push(line("bridge estimate", &|p| opt(p.bwe_kbps)));
    }
    if r.points.iter().any(|p| p.capacity_kbps.is_some()) {
        rate.push(line("link capacity", &|p| opt(p.capacity_kbps)));
    }
    vec![
        (
            "rate",
            line_chart(
                &format!("Endpoint {}: downlink (kbit/s)", r.index),
                "time (s)",
                "kbit/s",
                &rate,
            ),
        ),
        (
            "layer",
            line_chart(
                &format!("Endpoint {}: layer received (height)", r.index),
                "time (s)",
                "px",
                &[
                    line("highest frame", &|p| f64::from(p.frame_height_max)),
                    line("lowest frame", &|p| f64::from(p.frame_height_min)),
                ],
            ),
        ),
        (
            "loss",
            line_chart(
                &format!("Endpoint {}: loss per 1 s window", r.index),
                "time (s)",
                "%",
                &[
                    line("video RTP loss %", &|p| p.rtp_loss_percent),
                    line("stream loss %", &|p| p.loss_percent),
                ],
            ),
        ),
    ]
}

/// The whole page. `summary` rows are (label, value); `extra` is pre-rendered HTML (ramp table).
pub fn html(title: &str, summary: &[(String, String)], charts: &[String], extra: &str, scenario_toml: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:820px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}td.n{{text-align:right}}\
         pre{{background:#f6f6f6;padding:1em;overflow:auto}}svg{{display:block;margin:1em 0}}\
         </style></head><body><h1>{t}</h1>\n<h2>Summary</h2><table>",
        t = esc(title)
    );
    for (k, v) in summary {
        let _ = write!(s, "<tr><th>{}</th><td class=\"n\">{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table>\n");
    s.push_str(extra);
    s.push_str("<h2>Over time</h2>\n");
    for c in charts {
        s.push_str(c);
        s.push('\n');
    }
    let _ = writeln!(s, "<h2>Scenario</h2><pre>{}</pre></body></html>", esc(scenario_toml));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_rows_sum_kinds() {
        use crate::endpoint::EndpointReport;
        assert!(switch_rows(&[EndpointReport::default()]).is_empty());
        let mut a = EndpointReport {
            index: 0,
            switches_requested: 3,
            switches_observed: 5,
            ..Default::default()
        };
        a.violation_kinds.insert("MissingMarker".into(), 2);
        let mut b = EndpointReport {
            index: 1,
            switches_requested: 2,
            ..Default::default()
        };
        b.violation_kinds.insert("MissingMarker".into(), 1);
        let rows = switch_rows(&[a, b]);
        assert_eq!(
            rows[0].1,
            "#0: 3/5 (0 frames after the last), #1: 2/0 (0 frames after the last)"
        );
        assert_eq!(rows[1].1, "MissingMarker: 3");
    }

    #[test]
    fn nice_ticks() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(1000.0, 5.0), 200.0);
        assert_eq!(nice_step(0.7, 5.0), 0.2);
        assert_eq!(axis_max(23.0), (25.0, 5.0));
        assert_eq!(axis_max(0.0), (1.0, 0.2));
        assert_eq!(axis_max(f64::NAN), (1.0, 0.2));
    }

    /// The SVG is well-formed XML (parsed back with minidom), its axis covers the data, and the
    /// tick labels run from 0 to the axis maximum.
    #[test]
    fn svg_is_well_formed_with_axis_ranges() {
        let chart = line_chart(
            "latency <p99> & co",
            "time (s)",
            "ms",
            &[
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 1.0), (1.0, 7.3), (2.0, f64::NAN), (37.0, 2.0)],
                },
                Series {
                    name: "b & c".into(),
                    points: vec![(0.0, 0.5), (5.0, 43.0)],
                },
            ],
        );
        let root: minidom::Element = chart.parse().expect("well-formed SVG");
        assert_eq!(root.name(), "svg");
        let x_max: f64 = root.attr("data-x-max").expect("x max").parse().expect("number");
        let y_max: f64 = root.attr("data-y-max").expect("y max").parse().expect("number");
        assert!((37.0..=50.0).contains(&x_max), "x axis {x_max}");
        assert!((43.0..=50.0).contains(&y_max), "y axis {y_max}");
        let ticks = |class: &str| -> Vec<f64> {
            root.children()
                .filter(|c| c.name() == "text" && c.attr("class") == Some(class))
                .map(|c| c.text().parse::<f64>().expect("numeric tick"))
                .collect()
        };
        let y = ticks("ytick");
        assert_eq!(y.first(), Some(&0.0));
        assert_eq!(y.last(), Some(&y_max));
        let x = ticks("xtick");
        assert_eq!(x.last(), Some(&x_max));
        // One path per series; the NaN splits series a into two runs (two M commands).
        let paths: Vec<_> = root.children().filter(|c| c.name() == "path").collect();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0].attr("d").expect("d").matches('M').count(), 2);
        // Every plotted point lies inside the plot area.
        for p in &paths {
            for pt in p.attr("d").expect("d").split_whitespace() {
                let (xs, ys) = pt[1..].split_once(',').expect("x,y");
                let (px, py): (f64, f64) = (xs.parse().expect("x"), ys.parse().expect("y"));
                assert!((LEFT..=W - RIGHT + 0.1).contains(&px), "{px}");
                assert!((TOP - 0.1..=H - BOTTOM + 0.1).contains(&py), "{py}");
            }
        }
        // Title text survived escaping.
        assert!(root.children().any(|c| c.text() == "latency <p99> & co"));
    }

    #[test]
    fn receiver_charts_are_valid_svg() {
        let r = EndpointSeries {
            index: 1,
            points: (0..5)
                .map(|t| crate::metrics::EndpointPoint {
                    t,
                    rx_kbps: 900.0,
                    rx_packets: 100,
                    expected: 100,
                    loss_percent: 0.0,
                    rtp_expected: 100,
                    rtp_received: 100,
                    rtp_loss_percent: 0.0,
                    height: 360,
                    frame_height_min: 360,
                    frame_height_max: 360,
                    bwe_kbps: (t > 1).then_some(1000.0),
                    capacity_kbps: Some(1200.0),
                })
                .collect(),
        };
        let charts = receiver_charts(&r);
        assert_eq!(
            charts.iter().map(|c| c.0).collect::<Vec<_>>(),
            ["rate", "layer", "loss"]
        );
        for (_, c) in &charts {
            let root: minidom::Element = c.parse().expect("well-formed");
            assert_eq!(root.name(), "svg");
        }
        let root: minidom::Element = charts[0].1.parse().expect("svg");
        assert_eq!(
            root.children().filter(|c| c.name() == "path").count(),
            3,
            "received, estimate, capacity"
        );
    }

    #[test]
    fn empty_chart_is_still_valid() {
        let chart = line_chart("nothing", "x", "y", &[]);
        let root: minidom::Element = chart.parse().expect("well-formed");
        assert_eq!(root.attr("data-y-max"), Some("1"));
    }

    #[test]
    fn html_page_embeds_charts_and_escapes_scenario() {
        let page = html(
            "run",
            &[("loss".into(), "0.1 %".into())],
            &[line_chart("c", "x", "y", &[])],
            "",
            "name = \"<x>\"",
        );
        assert!(page.contains("<svg"));
        assert!(page.contains("&lt;x&gt;"));
        assert!(page.starts_with("<!DOCTYPE html>"));
    }
}
