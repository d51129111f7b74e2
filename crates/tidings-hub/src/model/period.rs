//! Lengths of time as the API takes them: seconds, or text with a unit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{HubError, HubResult};

/// A length of time: seconds, or a duration such as `"24h"`, `"90m"`,
/// `"30d"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Period {
    /// Seconds.
    Seconds(u64),
    /// A duration with units (`24h`, `90m`, `2d`).
    Text(String),
}

impl Period {
    /// The length, at most `max`; refuses (400, naming `field`) text that
    /// cannot be read and lengths beyond `max`.
    pub fn duration(&self, field: &str, max: Duration) -> HubResult<Duration> {
        let period = match self {
            Period::Seconds(s) => Duration::from_secs(*s),
            Period::Text(text) => humantime::parse_duration(text.trim())
                .map_err(|e| HubError::BadRequest(format!("{field} - {text:?}: {e}")))?,
        };
        if period > max {
            return Err(HubError::BadRequest(format!(
                "{field} - at most {}",
                humantime::format_duration(max)
            )));
        }
        Ok(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let year = Duration::from_secs(365 * 24 * 3600);
        let text = Period::Text("90m".to_owned());
        assert_eq!(
            text.duration("f", year).ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            Period::Seconds(7).duration("f", year).ok(),
            Some(Duration::from_secs(7))
        );
        assert!(Period::Text("soon".to_owned()).duration("f", year).is_err());
        assert!(Period::Text("400d".to_owned()).duration("f", year).is_err());
    }
}
