//! Line charts as inline SVG, drawn on the server: a figure per measure,
//! with its latest value in the caption and the same numbers in the
//! chart's accessible description.

use maud::{Markup, html};

/// Width and height of the drawing, in its own units (it scales to the page).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Most points drawn per line: more are merged, each group drawn as its
/// highest value (a spike stays visible), so a page stays small whatever
/// the reading interval.
const MOST_POINTS: usize = 360;

/// Room left of the plot for the scale's labels.
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 18.0;

/// One line: a name, a CSS class for its colour, and (time ms, value) points.
pub struct Series<'a> {
    /// What it measures.
    pub name: &'a str,
    /// Its colour's class.
    pub class: &'a str,
    /// The points, oldest first; `None` where nothing was measured.
    pub points: Vec<(u64, Option<f64>)>,
}

/// A chart of `series` over `[from, to]` (ms), its values shown by `show`.
pub fn line_chart(
    id: &str,
    title: &str,
    series: &[Series<'_>],
    (from, to): (u64, u64),
    show: impl Fn(f64) -> String,
) -> Markup {
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let scale_top = nice_ceiling(top);
    let span = to.saturating_sub(from).max(1) as f64;
    let x = |at: u64| LEFT + (at.saturating_sub(from) as f64 / span) * (WIDTH - LEFT);
    let y = |v: f64| (HEIGHT - BOTTOM) - (v / scale_top) * (HEIGHT - BOTTOM - 4.0);
    let latest: Vec<(String, String)> = series
        .iter()
        .map(|s| {
            let last = s.points.iter().rev().find_map(|p| p.1);
            (
                s.name.to_owned(),
                last.map_or_else(|| "no data yet".to_owned(), &show),
            )
        })
        .collect();
    let description = latest
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let has_data = series
        .iter()
        .any(|s| s.points.iter().any(|p| p.1.is_some()));
    html! {
        figure.chart id=(id) data-points=(series.iter().map(|s| s.points.iter().filter(|p| p.1.is_some()).count()).sum::<usize>()) data-max=(top) {
            figcaption {
                span.title { (title) }
                @for (i, (name, value)) in latest.iter().enumerate() {
                    span class={"legend " (series[i].class)} { (name) ": " strong { (value) } }
                }
            }
            svg viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" aria-label={(title) " over the last hour. Latest: " (description)} preserveAspectRatio="none" {
                // The scale: zero, half and top.
                @for fraction in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(WIDTH) y1=(y(scale_top * fraction)) y2=(y(scale_top * fraction)) {}
                    text.axis x=(LEFT - 4.0) y=(y(scale_top * fraction) + 4.0) text-anchor="end" { (show(scale_top * fraction)) }
                }
                text.axis x=(LEFT) y=(HEIGHT - 2.0) { "60 min ago" }
                text.axis x=(WIDTH) y=(HEIGHT - 2.0) text-anchor="end" { "now" }
                @for s in series {
                    @for run in runs(&s.points) {
                        polyline class={"line " (s.class)} points=(run.iter().map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v))).collect::<Vec<_>>().join(" ")) {}
                    }
                }
                @if !has_data {
                    text.axis x=((LEFT + WIDTH) / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" { "Waiting for the first readings…" }
                }
            }
        }
    }
}

/// At most [`MOST_POINTS`] points: consecutive ones merged into their
/// highest value, at the group's last time.
fn thinned(points: &[(u64, Option<f64>)]) -> Vec<(u64, Option<f64>)> {
    if points.len() <= MOST_POINTS {
        return points.to_vec();
    }
    let group = points.len().div_ceil(MOST_POINTS);
    points
        .chunks(group)
        .filter_map(|chunk| {
            let at = chunk.last()?.0;
            let top = chunk.iter().filter_map(|p| p.1).reduce(f64::max);
            Some((at, top))
        })
        .collect()
}

/// The stretches of consecutive measured points (a gap breaks the line).
fn runs(points: &[(u64, Option<f64>)]) -> Vec<Vec<(u64, f64)>> {
    let points = thinned(points);
    let mut runs = vec![Vec::new()];
    for (at, value) in &points {
        match value {
            Some(v) => {
                if let Some(run) = runs.last_mut() {
                    run.push((*at, *v));
                }
            }
            None => runs.push(Vec::new()),
        }
    }
    // A lone point is drawn as a short flat line, so it shows.
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| match r.as_slice() {
            [(at, v)] => vec![(at.saturating_sub(5_000), *v), (*at, *v)],
            _ => r,
        })
        .collect()
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v` (1 for nothing).
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= v)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round_and_gaps_break_lines() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        let runs = runs(&[
            (1, Some(1.0)),
            (2, Some(2.0)),
            (3, None),
            (40_000, Some(3.0)),
        ]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].len(), 2, "a lone point becomes a short line");
        let many: Vec<(u64, Option<f64>)> = (0..3_600u64)
            .map(|i| (i * 1_000, Some(if i == 1_234 { 9.0 } else { 1.0 })))
            .collect();
        let drawn = thinned(&many);
        assert!(drawn.len() <= MOST_POINTS, "{}", drawn.len());
        assert!(drawn.iter().any(|p| p.1 == Some(9.0)), "the spike survives");
    }

    #[test]
    fn a_chart_says_its_latest_values() {
        let chart = line_chart(
            "rate",
            "Published",
            &[Series {
                name: "events",
                class: "a",
                points: vec![(1_000, Some(2.0)), (2_000, Some(12.5))],
            }],
            (0, 3_000),
            |v| format!("{v}/s"),
        )
        .into_string();
        assert!(chart.contains("Latest: events: 12.5/s"), "{chart}");
        assert!(chart.contains("<polyline"), "{chart}");
        assert!(chart.contains(r#"data-points="2""#), "{chart}");
    }
}
