//! Bar charts drawn on the server as inline SVG: no chart JavaScript, nothing to load.

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const PLOT_TOP: f64 = 10.0;
const PLOT_BOTTOM: f64 = 150.0;
const PLOT_LEFT: f64 = 40.0;

/// One bar: a primary value, optionally with a secondary one stacked on top.
pub struct Point {
    pub name: String,
    pub primary: i64,
    pub secondary: i64,
}

pub struct BarChart {
    pub label: String,
    /// What the two stacked values are, for the legend and hover text.
    pub primary_label: &'static str,
    pub secondary_label: Option<&'static str>,
    pub width: f64,
    pub height: f64,
    pub plot_left: f64,
    pub plot_bottom: f64,
    /// Where the value labels of gridlines end, and where axis labels sit.
    pub value_label_x: f64,
    pub axis_label_y: f64,
    pub bars: Vec<Bar>,
    pub gridlines: Vec<Gridline>,
    pub total_primary: i64,
    pub total_secondary: i64,
    /// The line beside the title; by default the totals.
    pub summary: String,
}

pub struct Bar {
    pub x: f64,
    pub width: f64,
    pub primary_y: f64,
    pub primary_height: f64,
    pub secondary_y: f64,
    pub secondary_height: f64,
    /// Axis label under the bar, when this bar gets one.
    pub axis_label: Option<String>,
    pub label_x: f64,
    /// Hover text: the bar's name and numbers.
    pub tooltip: String,
    pub name: String,
    pub primary: i64,
    pub secondary: i64,
}

pub struct Gridline {
    pub y: f64,
    pub value: i64,
}

impl BarChart {
    /// Bars for `points`; every `label_every`-th bar gets an axis label.
    pub fn new(
        label: &str,
        primary_label: &'static str,
        secondary_label: Option<&'static str>,
        points: &[Point],
        label_every: usize,
    ) -> Self {
        let max = points
            .iter()
            .map(|p| p.primary + p.secondary)
            .max()
            .unwrap_or(0);
        let scale_max = nice_ceiling(max.max(1));
        let plot_height = PLOT_BOTTOM - PLOT_TOP;
        let slot = (WIDTH - PLOT_LEFT - 10.0) / points.len().max(1) as f64;
        let bar_width = (slot * 0.72).max(1.0);
        let height_of = |n: i64| n as f64 / scale_max as f64 * plot_height;
        let bars = points
            .iter()
            .enumerate()
            .map(|(i, point)| {
                let x = PLOT_LEFT + i as f64 * slot + (slot - bar_width) / 2.0;
                let primary_height = height_of(point.primary);
                let secondary_height = height_of(point.secondary);
                let tooltip = match secondary_label {
                    Some(secondary) => format!(
                        "{}: {} {}, {} {}",
                        point.name,
                        point.primary,
                        primary_label.to_lowercase(),
                        point.secondary,
                        secondary.to_lowercase()
                    ),
                    None => format!(
                        "{}: {} {}",
                        point.name,
                        point.primary,
                        primary_label.to_lowercase()
                    ),
                };
                Bar {
                    x,
                    width: bar_width,
                    primary_y: PLOT_BOTTOM - primary_height,
                    primary_height,
                    secondary_y: PLOT_BOTTOM - primary_height - secondary_height,
                    secondary_height,
                    axis_label: (i % label_every.max(1) == 0).then(|| point.name.clone()),
                    label_x: x + bar_width / 2.0,
                    tooltip,
                    name: point.name.clone(),
                    primary: point.primary,
                    secondary: point.secondary,
                }
            })
            .collect();
        let gridlines = [0, scale_max / 2, scale_max]
            .into_iter()
            .map(|value| Gridline {
                y: PLOT_BOTTOM - height_of(value),
                value,
            })
            .collect();
        Self {
            label: label.to_owned(),
            primary_label,
            secondary_label,
            width: WIDTH,
            height: HEIGHT,
            plot_left: PLOT_LEFT,
            plot_bottom: PLOT_BOTTOM,
            value_label_x: PLOT_LEFT - 6.0,
            axis_label_y: PLOT_BOTTOM + 18.0,
            bars,
            gridlines,
            total_primary: points.iter().map(|p| p.primary).sum(),
            total_secondary: points.iter().map(|p| p.secondary).sum(),
            summary: String::new(),
        }
        .with_totals_summary()
    }

    fn with_totals_summary(mut self) -> Self {
        self.summary = match self.secondary_label {
            Some(secondary) => format!(
                "{} {} · {} {}",
                self.total_primary,
                self.primary_label.to_lowercase(),
                self.total_secondary,
                secondary.to_lowercase()
            ),
            None => format!(
                "{} {}",
                self.total_primary,
                self.primary_label.to_lowercase()
            ),
        };
        self
    }

    /// Replaces the totals beside the title (for levels, where a sum means nothing).
    pub fn with_summary(mut self, summary: String) -> Self {
        self.summary = summary;
        self
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

    fn point(primary: i64, secondary: i64) -> Point {
        Point {
            name: "x".into(),
            primary,
            secondary,
        }
    }

    #[test]
    fn scales_to_a_nice_maximum_and_stacks() {
        let chart = BarChart::new(
            "t",
            "Successful",
            Some("Rejected"),
            &[point(30, 10), point(0, 0), point(80, 0)],
            2,
        );
        assert_eq!(chart.gridlines.last().unwrap().value, 100);
        assert_eq!(chart.total_primary, 110);
        assert_eq!(chart.total_secondary, 10);
        let first = &chart.bars[0];
        assert!(
            (first.primary_height - 42.0).abs() < 1e-9,
            "30 of 100 over a 140px plot"
        );
        assert!(
            (first.secondary_y + first.secondary_height - first.primary_y).abs() < 1e-9,
            "stacked"
        );
        assert_eq!(first.tooltip, "x: 30 successful, 10 rejected");
        assert_eq!(chart.bars[1].primary_height, 0.0);
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
