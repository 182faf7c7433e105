//! Rows of results (one JSON line each, appended by every run) turned into a Markdown
//! table and a PNG chart of throughput and p99 latency per row.

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, IntoSegmentedCoord, SegmentValue, ValueFormatter};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adapters::{ClientStyle, SystemKind};
use crate::ledger::Tally;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub system: SystemKind,
    /// The clients connected through a Unix socket rather than TCP.
    #[serde(default)]
    pub unix_socket: bool,
    /// The system's durability setting as configured, e.g. `fsync` or `appendfsync always`.
    pub durability: String,
    pub style: ClientStyle,
    pub producers: usize,
    pub consumers: usize,
    pub messages: u64,
    pub size: usize,
    pub rate_target: Option<f64>,
    pub messages_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub seconds: f64,
    /// CPU seconds of the server's process tree during the run (`None`: no pid given).
    pub server_cpu_seconds: Option<f64>,
    pub loadgen_cpu_seconds: f64,
    pub tally: Tally,
}

impl Row {
    fn style_label(&self) -> &'static str {
        match self.style {
            ClientStyle::Single => "1 msg/op",
            ClientStyle::Best => "best practice",
        }
    }

    fn system_label(&self) -> String {
        let name = serde_json::to_value(self.system)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let name = if self.unix_socket {
            format!("{name} (unix socket)")
        } else {
            name
        };
        match self.rate_target {
            Some(rate) => format!("{name} @{rate:.0}/s"),
            None => name,
        }
    }

    fn chart_label(&self) -> String {
        format!(
            "{} · {} · {}",
            self.system_label(),
            self.durability,
            self.style_label()
        )
    }
}

pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | durability | client style | P×C | messages × bytes | msg/s | p50 ms | p99 ms | p99.9 ms | server CPU s | load generator CPU s | lost | duplicates | redelivered |\n\
         |---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let server_cpu = row
            .server_cpu_seconds
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {} | {} | {} | {}×{} | {} × {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} | {} | {} |\n",
            row.system_label(),
            row.durability,
            row.style_label(),
            row.producers,
            row.consumers,
            row.messages,
            row.size,
            row.messages_per_second,
            row.p50_ms,
            row.p99_ms,
            row.p999_ms,
            server_cpu,
            row.loadgen_cpu_seconds,
            row.tally.lost,
            row.tally.duplicates,
            row.tally.redeliveries,
        ));
    }
    out.push_str(
        "\nServer and load generator run on the same machine and compete for its cores: \
         compare rows of one run, and read the CPU columns next to the rates.\n",
    );
    out
}

/// Registers the TrueType font the chart's text is drawn with (no system font lookup).
fn register_font(font: &Path) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "read font {} (Debian: apt-get install fonts-dejavu-core)",
            font.display()
        )
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", font.display()))
}

/// One panel of horizontal bars, a row each, along the x axis `x`: linear from 0 for the
/// rates, logarithmic for the latencies, which span from milliseconds (paced rows) to
/// seconds (rows run flat out, whose messages queue).
fn bar_panel<X>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    rows: &[Row],
    caption: &str,
    value: impl Fn(&Row) -> f64,
    x: X,
    labels: bool,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let x: X::CoordDescType = x.into();
    let origin = x.range().start;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(10)
        // Room for the last label of the x axis.
        .margin_right(35)
        .x_label_area_size(30)
        .y_label_area_size(if labels { 470 } else { 5 })
        .build_cartesian_2d(x, (0..rows.len()).into_segmented())
        .context("chart axes")?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if labels => rows
                .len()
                .checked_sub(i + 1)
                .and_then(|top_down| rows.get(top_down))
                .map(Row::chart_label)
                .unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .context("chart mesh")?;
    chart
        // The first row at the top.
        .draw_series(rows.iter().rev().enumerate().map(|(i, row)| {
            let color = Palette99::pick(row.system as usize).filled();
            let mut bar = Rectangle::new(
                [
                    (origin, SegmentValue::Exact(i)),
                    (value(row).max(origin), SegmentValue::Exact(i + 1)),
                ],
                color,
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .context("chart bars")?;
    Ok(())
}

/// The range of a log axis for latencies `ms`: whole decades, from the one at or below the
/// lowest to the one above the highest. 1 µs at the least, which also stands for 0; one
/// decade, 1-10 µs, when there is nothing to show.
fn decades(ms: &[f64]) -> Range<f64> {
    let exponents = ms.iter().map(|v| v.max(1e-3).log10());
    let low = exponents.clone().fold(f64::INFINITY, f64::min);
    let low = if low.is_finite() { low.floor() } else { -3.0 };
    let high = exponents.fold(low, f64::max).floor() + 1.0;
    10f64.powf(low)..10f64.powf(high)
}

pub fn chart(rows: &[Row], png: &Path, font: &Path) -> Result<()> {
    register_font(font)?;
    let height = 90 + 34 * rows.len() as u32;
    let root = BitMapBackend::new(png, (1700, height)).into_drawing_area();
    root.fill(&WHITE).context("chart background")?;
    let (left, right) = root.split_horizontally(1130);
    let rate = |r: &Row| r.messages_per_second;
    let p99 = |r: &Row| r.p99_ms;
    let most_rate = rows.iter().map(rate).fold(0.0, f64::max);
    bar_panel(
        &left,
        rows,
        "throughput (msg/s, higher is better)",
        rate,
        0f64..most_rate.max(1e-9) * 1.15,
        true,
    )?;
    let p99s: Vec<f64> = rows.iter().map(p99).collect();
    bar_panel(
        &right,
        rows,
        "p99 latency (ms, log scale, lower is better)",
        p99,
        decades(&p99s).log_scale(),
        false,
    )?;
    root.present()
        .with_context(|| format!("write {}", png.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::decades;

    /// The range's bounds as powers of ten.
    fn exponents(ms: &[f64]) -> (f64, f64) {
        let range = decades(ms);
        (range.start.log10().round(), range.end.log10().round())
    }

    #[test]
    fn the_log_axis_spans_whole_decades_around_every_value() {
        // Paced rows in milliseconds beside flat-out rows in seconds.
        assert_eq!(exponents(&[2.2, 9.67, 4_866.05]), (0.0, 4.0));
        // A value on a decade is inside, not on the upper end.
        assert_eq!(exponents(&[10.0]), (1.0, 2.0));
        assert_eq!(exponents(&[0.5, 0.9]), (-1.0, 0.0));
    }

    #[test]
    fn the_log_axis_copes_with_zero_and_with_nothing() {
        assert_eq!(exponents(&[0.0, 5.0]), (-3.0, 1.0));
        assert_eq!(exponents(&[0.0]), (-3.0, -2.0));
        assert_eq!(exponents(&[]), (-3.0, -2.0));
    }
}
