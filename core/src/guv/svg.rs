//! Plots of simulated runs as plain SVG: three panels (workers, jobs in
//! the queue, late jobs so far) over time, one line per policy.

use std::fmt::Write;

use super::simulate::SimResult;

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A round step for about `n` ticks up to `max`.
fn step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Draw `results` (same trace, one per policy; each with a timeline).
pub fn plot(title: &str, results: &[SimResult]) -> String {
    let (w, ph, left, top, gap) = (900.0, 170.0, 70.0, 50.0, 40.0);
    let plot_w = w - left - 170.0;
    let h = top + 3.0 * ph + 2.0 * gap + 50.0;
    let tmax = results.iter().flat_map(|r| r.timeline.last()).map(|p| p.t).fold(1.0, f64::max);
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{left}" y="25" font-size="16" font-weight="bold">{}</text>"#, esc(title));
    type Get = fn(&super::simulate::Point) -> f64;
    let panels: [(&str, Get); 3] = [
        ("workers (desired)", |p| p.workers as f64),
        ("jobs in queue (ready + in flight)", |p| p.queue as f64),
        ("late jobs so far", |p| p.misses as f64),
    ];
    for (i, (label, get)) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (ph + gap);
        let vmax = results.iter().flat_map(|r| r.timeline.iter().map(get)).fold(1.0, f64::max);
        let vstep = step(vmax, 4.0);
        let vtop = (vmax / vstep).ceil() * vstep;
        let _ = writeln!(s, r#"<text x="{left}" y="{}" font-weight="bold">{}</text>"#, y0 - 6.0, esc(label));
        let _ = writeln!(s, r##"<rect x="{left}" y="{y0}" width="{plot_w}" height="{ph}" fill="none" stroke="#888"/>"##);
        let mut v = 0.0;
        while v <= vtop + 1e-9 {
            let y = y0 + ph - v / vtop * ph;
            let _ = writeln!(s, r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##, left + plot_w, left - 5.0, y + 4.0, v);
            v += vstep;
        }
        let tstep = step(tmax / 3600.0, 8.0) * 3600.0;
        let mut t = 0.0;
        while t <= tmax + 1e-9 {
            let x = left + t / tmax * plot_w;
            let _ = writeln!(s, r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#888"/>"##, y0 + ph, y0 + ph + 4.0);
            if i == 2 {
                let _ = writeln!(s, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#, y0 + ph + 16.0, (t / 3600.0 * 100.0).round() / 100.0);
            }
            t += tstep;
        }
        for (k, r) in results.iter().enumerate() {
            let mut pts = String::new();
            for p in &r.timeline {
                let x = left + p.t / tmax * plot_w;
                let y = y0 + ph - get(p) / vtop * ph;
                let _ = write!(pts, "{x:.1},{y:.1} ");
            }
            let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.2"/>"#, pts.trim_end(), COLORS[k % COLORS.len()]);
        }
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">time (h)</text>"#, left + plot_w / 2.0, h - 12.0);
    for (k, r) in results.iter().enumerate() {
        let y = top + 10.0 + k as f64 * 36.0;
        let x = left + plot_w + 15.0;
        let c = COLORS[k % COLORS.len()];
        let _ = writeln!(s, r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#, x + 20.0, x + 26.0, y + 4.0, esc(&r.policy));
        let _ = writeln!(s, r##"<text x="{}" y="{}" font-size="10" fill="#555">{:.2} % in time, {:.0} worker-h</text>"##, x + 26.0, y + 17.0, r.within_deadline * 100.0, r.worker_seconds / 3600.0);
    }
    s.push_str("</svg>\n");
    s
}
