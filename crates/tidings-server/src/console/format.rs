//! Numbers and times as people read them: `1,234,567`, `3 min ago` with
//! the exact time beside it.

use maud::{Markup, html};

/// A count with thousands separated: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count and its noun, singular or plural: `1 attempt`, `2 attempts`.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// A value of a chart of counts: whole numbers as counts, halves (a scale
/// of 1) with one decimal.
pub fn count_value(v: f64) -> String {
    if v.fract() == 0.0 && v >= 0.0 {
        count(v as u64)
    } else {
        format!("{v:.1}")
    }
}

/// A rate per second, with one decimal under 100: `12.5/s`, `1,204/s`.
pub fn rate(per_second: f64) -> String {
    if !per_second.is_finite() || per_second <= 0.0 {
        return "0/s".to_owned();
    }
    if per_second < 100.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{}/s", count(per_second.round() as u64))
    }
}

/// A duration in milliseconds, in the unit that reads best.
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "–".to_owned();
    }
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

/// Bytes in binary units: `512 B`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago (or from now) `at` is, seen at `now`: `just now`,
/// `5 s ago`, `3 min ago`, `in 2 h`, `4 d ago`.
pub fn relative(at: u64, now: u64) -> String {
    let (span, past) = if at <= now {
        (now - at, true)
    } else {
        (at - now, false)
    };
    let secs = span / 1000;
    let amount = match secs {
        0..=4 => return "just now".to_owned(),
        5..=59 => format!("{secs} s"),
        60..=3_599 => format!("{} min", secs / 60),
        3_600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A point in time shown relative, with the exact time beside it and in
/// the element's `datetime`.
pub fn when(at: u64, now: u64) -> Markup {
    let exact = tidings_hub::time::iso(at);
    let shown = exact.get(..19).unwrap_or(&exact).replace('T', " ");
    html! {
        time datetime=(exact) title=(exact) {
            (relative(at, now)) " " span.exact { "(" (shown) " UTC)" }
        }
    }
}

/// A time as the API gives it (ISO 8601), shown as [`when`].
pub fn when_iso(text: &str, now: u64) -> Markup {
    match tidings_hub::time::parse_time(text) {
        Some(at) => when(at, now),
        None => html! { (text) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_sizes_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(12.46), "12.5/s");
        assert_eq!(rate(1_204.4), "1,204/s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
        assert_eq!(millis(3.25), "3.2 ms");
        assert_eq!(millis(1_500.0), "1.5 s");
    }

    #[test]
    fn times_read_relative_both_ways() {
        let now = 10_000_000;
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - 30_000, now), "30 s ago");
        assert_eq!(relative(now - 180_000, now), "3 min ago");
        assert_eq!(relative(now + 7_200_000, now), "in 2 h");
        let shown = when(0, 90_000_000).into_string();
        assert!(shown.contains("1 d ago"), "{shown}");
        assert!(shown.contains("1970-01-01 00:00:00 UTC"), "{shown}");
    }
}
