//! Wall-clock times as the API shows them and reads them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// ISO 8601 in UTC with an explicit offset (`2026-11-22T01:20:13.196000+00:00`),
/// which Python's `datetime.fromisoformat` reads on every version.
pub fn iso(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let text = humantime::format_rfc3339_micros(t).to_string();
    match text.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => text,
    }
}

/// Reads a point in time: ISO 8601 (`2026-11-22`, `2026-11-22T10:00:00`,
/// with fractions, `Z` or `+00:00`; other offsets are refused) or Unix
/// seconds. Returns milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64);
    }
    let base = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    let full = if base.len() == 10 {
        format!("{base}T00:00:00")
    } else {
        base.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(&full).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The start of a `timeline`/`window` keyword's period (Amebo's keywords:
/// `today` is the last 24 hours).
pub fn timeline_start(keyword: &str, now: u64) -> Option<u64> {
    const DAY: u64 = 24 * 3600 * 1000;
    let days = match keyword {
        "today" => 1,
        "week" | "7d" => 7,
        "month" | "30d" => 30,
        "all" => return Some(0),
        _ => return None,
    };
    Some(now.saturating_sub(days * DAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = 1_795_310_413_196;
        let text = iso(ms);
        assert_eq!(text, "2026-11-22T01:20:13.196000+00:00");
        assert_eq!(parse_time(&text), Some(ms));
        assert_eq!(parse_time("2026-11-22T01:20:13.196Z"), Some(ms));
        assert_eq!(parse_time("2026-11-22"), Some(1_795_305_600_000));
        assert_eq!(parse_time("1795310413.196"), Some(ms));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-11-22T01:20:13+02:00"), None);
    }
}
