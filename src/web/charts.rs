//! Bar charts drawn on the server as inline SVG: no chart JavaScript, nothing to load.

use crate::api_keys::usage::Bucket;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const PLOT_TOP: f64 = 10.0;
const PLOT_BOTTOM: f64 = 150.0;
const PLOT_LEFT: f64 = 40.0;

pub struct BarChart {
    pub label: String,
    pub width: f64,
    pub height: f64,
    pub plot_left: f64,
    pub plot_bottom: f64,
    /// Where the value labels of gridlines end, and where axis labels sit.
    pub value_label_x: f64,
    pub axis_label_y: f64,
    pub bars: Vec<Bar>,
    pub gridlines: Vec<Gridline>,
    pub total_success: i64,
    pub total_rejected: i64,
}

pub struct Bar {
    pub x: f64,
    pub width: f64,
    pub success_y: f64,
    pub success_height: f64,
    pub rejected_y: f64,
    pub rejected_height: f64,
    /// Axis label under the bar, when this bar gets one.
    pub axis_label: Option<String>,
    pub label_x: f64,
    /// Hover text: the bucket and its numbers.
    pub tooltip: String,
    pub start: String,
    pub success: i64,
    pub rejected: i64,
}

pub struct Gridline {
    pub y: f64,
    pub value: i64,
}

impl BarChart {
    /// Stacked bars (successful below, rejected above) for `buckets`, labelled by `name_of`; every
    /// `label_every`-th bar gets an axis label.
    pub fn new(label: &str, buckets: &[Bucket], name_of: impl Fn(&Bucket) -> String, label_every: usize) -> Self {
        let max = buckets.iter().map(|b| b.success + b.rejected).max().unwrap_or(0);
        let scale_max = nice_ceiling(max.max(1));
        let plot_height = PLOT_BOTTOM - PLOT_TOP;
        let slot = (WIDTH - PLOT_LEFT - 10.0) / buckets.len().max(1) as f64;
        let bar_width = (slot * 0.72).max(1.0);
        let height_of = |n: i64| n as f64 / scale_max as f64 * plot_height;
        let bars = buckets
            .iter()
            .enumerate()
            .map(|(i, bucket)| {
                let x = PLOT_LEFT + i as f64 * slot + (slot - bar_width) / 2.0;
                let success_height = height_of(bucket.success);
                let rejected_height = height_of(bucket.rejected);
                let name = name_of(bucket);
                Bar {
                    x,
                    width: bar_width,
                    success_y: PLOT_BOTTOM - success_height,
                    success_height,
                    rejected_y: PLOT_BOTTOM - success_height - rejected_height,
                    rejected_height,
                    axis_label: (i % label_every.max(1) == 0).then(|| name.clone()),
                    label_x: x + bar_width / 2.0,
                    tooltip: format!("{name}: {} successful, {} rejected", bucket.success, bucket.rejected),
                    start: name,
                    success: bucket.success,
                    rejected: bucket.rejected,
                }
            })
            .collect();
        let gridlines = [0, scale_max / 2, scale_max]
            .into_iter()
            .map(|value| Gridline { y: PLOT_BOTTOM - height_of(value), value })
            .collect();
        Self {
            label: label.to_owned(),
            width: WIDTH,
            height: HEIGHT,
            plot_left: PLOT_LEFT,
            plot_bottom: PLOT_BOTTOM,
            value_label_x: PLOT_LEFT - 6.0,
            axis_label_y: PLOT_BOTTOM + 18.0,
            bars,
            gridlines,
            total_success: buckets.iter().map(|b| b.success).sum(),
            total_rejected: buckets.iter().map(|b| b.rejected).sum(),
        }
    }
}

/// The smallest even "nice" number (1, 2, 5 × 10ⁿ, at least 2) at or above `n`, so gridlines read well.
fn nice_ceiling(n: i64) -> i64 {
    let mut step = 1;
    loop {
        for factor in [2, 5, 10] {
            if step * factor >= n {
                return step * factor;
            }
        }
        step *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(success: i64, rejected: i64) -> Bucket {
        Bucket { start: chrono::NaiveDateTime::default(), success, rejected }
    }

    #[test]
    fn scales_to_a_nice_maximum_and_stacks() {
        let chart = BarChart::new("t", &[bucket(30, 10), bucket(0, 0), bucket(80, 0)], |_| "x".into(), 2);
        assert_eq!(chart.gridlines.last().unwrap().value, 100);
        assert_eq!(chart.total_success, 110);
        assert_eq!(chart.total_rejected, 10);
        let first = &chart.bars[0];
        assert!((first.success_height - 42.0).abs() < 1e-9, "30 of 100 over a 140px plot");
        assert!((first.rejected_y + first.rejected_height - first.success_y).abs() < 1e-9, "stacked");
        assert_eq!(chart.bars[1].success_height, 0.0);
        assert!(chart.bars[0].axis_label.is_some() && chart.bars[1].axis_label.is_none());
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(1), 2);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(501), 1000);
    }
}
