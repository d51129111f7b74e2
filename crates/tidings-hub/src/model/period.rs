//! Lengths of time as the API takes them: seconds, or text with a unit.

use std::time::Duration;

pub use tidings_hub_api::Period;

use crate::error::{HubError, HubResult};

/// The length of `period`, at most `max`; refuses (400, naming `field`)
/// text that cannot be read and lengths beyond `max`.
pub fn duration(period: &Period, field: &str, max: Duration) -> HubResult<Duration> {
    let length = match period {
        Period::Seconds(s) => Duration::from_secs(*s),
        Period::Text(text) => humantime::parse_duration(text.trim())
            .map_err(|e| HubError::BadRequest(format!("{field} - {text:?}: {e}")))?,
    };
    if length > max {
        return Err(HubError::BadRequest(format!(
            "{field} - at most {}",
            humantime::format_duration(max)
        )));
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let year = Duration::from_secs(365 * 24 * 3600);
        let text = Period::Text("90m".to_owned());
        assert_eq!(
            duration(&text, "f", year).ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            duration(&Period::Seconds(7), "f", year).ok(),
            Some(Duration::from_secs(7))
        );
        assert!(duration(&Period::Text("soon".to_owned()), "f", year).is_err());
        assert!(duration(&Period::Text("400d".to_owned()), "f", year).is_err());
    }
}
