//! One webhook request: the body, its signatures, and what the answer means.

use crate::model::secret::SigningKeys;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::destination::{Destinations, Refusal, refusal_in};
use crate::model::Event;
use crate::signature;
use crate::time::iso;

/// The body subscribers receive: Amebo's keys first, then the event id and time.
#[derive(Serialize)]
struct Body<'a> {
    action: &'a str,
    metadata: &'a RawValue,
    payload: &'a RawValue,
    event: &'a str,
    timestamped: String,
}

/// The exact bytes posted for `event`.
pub fn body(event: &Event) -> Vec<u8> {
    let body = Body {
        action: &event.action,
        metadata: &event.metadata,
        payload: &event.payload,
        event: &event.id,
        timestamped: iso(event.published_at()),
    };
    // Strings and already-valid raw JSON always serialize.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// What an attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// What went wrong (empty on success).
    pub error: Option<String>,
    /// The endpoint asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The address policy refused the destination: nothing was sent, and
    /// `error` names the address (for the admin's eyes only).
    pub refused: bool,
}

impl Outcome {
    /// A 2xx answer.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The endpoint is unwell (no answer, 5xx, 429): what trips its breaker.
    /// Other answers, even errors, show it is up; a refused destination was
    /// never tried.
    pub fn endpoint_failed(&self) -> bool {
        !self.refused && self.status.is_none_or(|s| s >= 500 || s == 429)
    }

    fn refused(refusal: &Refusal) -> Self {
        Self {
            status: None,
            elapsed: Duration::ZERO,
            error: Some(refusal.to_string()),
            retry_after: None,
            refused: true,
        }
    }

    /// A 410 answer: the endpoint is gone for good.
    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How much of an error answer's body is kept.
const ERROR_BODY_CHARS: usize = 512;

/// Everything an attempt needs to know.
pub struct Attempt<'a> {
    /// Where to post.
    pub endpoint: &'a str,
    /// What to sign with.
    pub keys: &'a SigningKeys,
    /// The event.
    pub event: &'a Event,
    /// Stable id of this delivery (the gist key).
    pub delivery_id: &'a str,
    /// 1-based attempt number.
    pub number: u32,
    /// A replay asked for by the admin, outside the delivery's retries.
    pub replay: bool,
}

/// The Standard Webhooks `webhook-id` of an attempt: `msg_` and 32 hex
/// digits derived from the delivery (its gist key, which may hold '.', the
/// separator of the signed content, so it is not used as is): the same for
/// every retry of a delivery, so receivers can drop repeats; a replay
/// gets a new one (derived from its attempt number too).
pub fn webhook_id(delivery_id: &str, number: u32, replay: bool) -> String {
    let source = if replay {
        format!("{delivery_id}/replay/{number}")
    } else {
        delivery_id.to_owned()
    };
    format!("msg_{}", &signature::digest(&source)[..32])
}

fn traceparent(event: &Event, delivery_id: &str, number: u32) -> Option<String> {
    let trace = event.trace_id()?;
    // A new span per attempt, derived from the delivery and attempt.
    let digest = signature::digest(&format!("{delivery_id}/{number}"));
    Some(format!("00-{trace}-{}-01", &digest[..16]))
}

/// The header every webhook carries (its delivery id): a hub refuses a
/// request that has it as anything but anonymous, so no subscription can
/// make a hub publish to itself in a loop.
pub const DELIVERY_HEADER: &str = "x-tidings-delivery";

/// Posts the event and reports what happened. Never fails: transport errors
/// and refused destinations are outcomes too. `client` must resolve names
/// through `destinations` ([`Destinations::resolver`]); a literal address
/// is checked here.
pub async fn post(
    client: &reqwest::Client,
    destinations: &Destinations,
    attempt: Attempt<'_>,
) -> Outcome {
    let checked = reqwest::Url::parse(attempt.endpoint)
        .map_err(|e| Refusal {
            detail: format!("{:?} is not a URL: {e}", attempt.endpoint),
        })
        .and_then(|url| destinations.check_literal(&url));
    if let Err(refusal) = checked {
        return Outcome::refused(&refusal);
    }
    let body = body(attempt.event);
    let now_secs = crate::time::now_ms() / 1000;
    let id = webhook_id(attempt.delivery_id, attempt.number, attempt.replay);
    let signatures: Vec<String> = attempt
        .keys
        .standard
        .iter()
        .map(|key| signature::standard(key, &id, now_secs, &body))
        .collect();
    let mut request = client
        .post(attempt.endpoint)
        .header("content-type", "application/json");
    let mut amebo = attempt.keys.amebo.iter();
    if let Some(secret) = amebo.next() {
        request = request.header("x-amebo-signature", signature::amebo(secret, &body));
    }
    if let Some(previous) = amebo.next() {
        request = request.header(
            "x-amebo-signature-previous",
            signature::amebo(previous, &body),
        );
    }
    let mut request = request
        .header("x-amebo-event-id", &attempt.event.id)
        .header("x-amebo-delivery-attempt", attempt.number.to_string())
        .header("webhook-id", &id)
        .header(DELIVERY_HEADER, attempt.delivery_id)
        .header("webhook-timestamp", now_secs.to_string())
        .header("webhook-signature", signatures.join(" "));
    if let Some(tp) = traceparent(attempt.event, attempt.delivery_id, attempt.number) {
        request = request.header("traceparent", tp);
    }
    let started = Instant::now();
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let error = if (200..300).contains(&status) {
                None
            } else {
                let text = response.text().await.unwrap_or_default();
                let snippet: String = text.chars().take(ERROR_BODY_CHARS).collect();
                Some(format!("HTTP {status}: {snippet}"))
            };
            Outcome {
                status: Some(status),
                elapsed: started.elapsed(),
                error,
                retry_after,
                refused: false,
            }
        }
        Err(e) => match refusal_in(&e) {
            Some(refusal) => Outcome::refused(refusal),
            None => Outcome {
                status: None,
                elapsed: started.elapsed(),
                error: Some(describe(&e)),
                retry_after: None,
                refused: false,
            },
        },
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", tidings_core::error::with_causes(e))
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
    }
}
