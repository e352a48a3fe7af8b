//! The latency-vs-rate chart of `docs/benchmarks.md` (SVG, drawn with `plotters`).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::ingest::LatencyRow;

/// One line: tracing on or off, its label, the percentile it draws, its colour.
type Series = (bool, &'static str, fn(&LatencyRow) -> f64, RGBColor);

/// p50 and p99 latency against the offered rate, tracing on and off, on a log scale.
pub fn latency_vs_rate(rows: &[LatencyRow], path: &Path) -> Result<()> {
    let max_rate = rows.iter().map(|r| r.rate).fold(1.0, f64::max) * 1.05;
    let max_ms = rows
        .iter()
        .map(|r| r.load.latency_ms_p99)
        .fold(1.0, f64::max)
        * 1.5;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Producer: latency of POST /messages vs offered rate",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_rate, (0.1f64..max_ms).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered rate (messages/s)")
        .y_desc("latency (ms, log scale)")
        .draw()?;
    let series: [Series; 4] = [
        (true, "p99, tracing on", |r| r.load.latency_ms_p99, RED),
        (
            true,
            "p50, tracing on",
            |r| r.load.latency_ms_p50,
            RGBColor(240, 150, 150),
        ),
        (false, "p99, tracing off", |r| r.load.latency_ms_p99, BLUE),
        (
            false,
            "p50, tracing off",
            |r| r.load.latency_ms_p50,
            RGBColor(150, 150, 240),
        ),
    ];
    for (tracing, label, value, color) in series {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.tracing == tracing)
            .map(|r| (r.rate, value(r).max(0.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
