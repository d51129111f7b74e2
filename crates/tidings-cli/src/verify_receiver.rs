//! `tidings verify-receiver URL --secret S`: does a webhook receiver check
//! what it should? Sends it deliveries signed as the hub signs them — one
//! valid, the same again, and five it must refuse — and reports what it
//! answered to each. It sends only to the URL given and follows no redirect.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use serde::Serialize;

use crate::output;

/// `tidings verify-receiver`'s arguments.
#[derive(Debug, Args)]
pub struct VerifyReceiverArgs {
    /// The receiver's URL (where a subscription would deliver).
    pub url: String,
    /// What the receiver verifies with: the subscription's signing key
    /// (`whsec_...`, the Standard Webhooks headers) or the subscriber
    /// application's secret (`x-amebo-signature`).
    #[arg(long, env = "TIDINGS_RECEIVER_SECRET", hide_env_values = true)]
    pub secret: String,
    /// How long to wait for each answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

/// What a receiver should do with a check's delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    /// Answer 2xx.
    Accept,
    /// Answer 2xx without handling the event again (not visible from
    /// outside: the receiver's own logs tell).
    AcceptOnce,
    /// Answer 4xx.
    Refuse,
}

/// One check's outcome.
#[derive(Debug, Serialize)]
struct Report {
    check: &'static str,
    sent: &'static str,
    expected: Expect,
    /// The HTTP status, if it answered.
    status: Option<u16>,
    /// Connection or timeout error, if it did not.
    error: Option<String>,
    passed: bool,
}

/// How a delivery is signed: the key, and whether it is Standard Webhooks.
enum Signer {
    Standard(Vec<u8>),
    Amebo(String),
}

/// One delivery to send.
struct Delivery {
    id: String,
    timestamp: u64,
    /// The bytes signed.
    signed: String,
    /// The bytes sent (different from `signed` in the checks that change them).
    sent: String,
    /// Signed with another key.
    forged: bool,
}

/// A delivery's body as the hub sends it, keys in order and compact (a
/// receiver that re-serialises the JSON before verifying gets the same bytes
/// back, so only the checks meant to catch it do).
fn body(event: &str, check: &str, n: u32) -> String {
    format!(
        r#"{{"action":"tidings.verify_receiver","event":"{event}","metadata":{{}},"payload":{{"check":"{check}","n":{n}}},"timestamped":"2026-01-01T00:00:00+00:00"}}"#
    )
}

/// The same meaning, keys in another order.
fn reordered(event: &str, check: &str, n: u32) -> String {
    format!(
        r#"{{"timestamped":"2026-01-01T00:00:00+00:00","payload":{{"n":{n},"check":"{check}"}},"metadata":{{}},"event":"{event}","action":"tidings.verify_receiver"}}"#
    )
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    Ok(hex::encode(raw))
}

/// Runs the checks and prints the report; fails if any check failed.
pub async fn run(args: VerifyReceiverArgs, json: bool) -> anyhow::Result<()> {
    let signer = match args
        .secret
        .strip_prefix(tidings_signatures::SIGNING_KEY_PREFIX)
    {
        Some(encoded) => Signer::Standard(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .context("--secret: a signing key is whsec_ followed by base64")?,
        ),
        None => Signer::Amebo(args.secret.clone()),
    };
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let run_id = random_hex(8)?;
    let event = |n: u32| format!("{run_id}{n:016x}");
    let delivery = |n: u32, check: &str| -> anyhow::Result<Delivery> {
        let signed = body(&event(n), check, 1);
        Ok(Delivery {
            id: format!("msg_{}", random_hex(16)?),
            timestamp: now,
            sent: signed.clone(),
            signed,
            forged: false,
        })
    };
    let valid = delivery(1, "valid")?;
    let replay = Delivery {
        id: valid.id.clone(),
        timestamp: valid.timestamp,
        signed: valid.signed.clone(),
        sent: valid.sent.clone(),
        forged: false,
    };
    let tampered = Delivery {
        sent: body(&event(2), "tampered", 2),
        ..delivery(2, "tampered")?
    };
    let forged = Delivery {
        forged: true,
        ..delivery(3, "wrong_signature")?
    };
    let stale = Delivery {
        timestamp: now.saturating_sub(600),
        ..delivery(4, "stale")?
    };
    let reordered_body = Delivery {
        sent: reordered(&event(5), "reordered", 1),
        ..delivery(5, "reordered")?
    };
    let standard = matches!(signer, Signer::Standard(_));
    let checks: Vec<(&'static str, &'static str, Expect, Option<Delivery>)> = vec![
        (
            "valid",
            "a delivery signed correctly",
            Expect::Accept,
            Some(valid),
        ),
        (
            "replay",
            "the same delivery again (same webhook-id, same event)",
            Expect::AcceptOnce,
            Some(replay),
        ),
        (
            "tampered",
            "a body changed after it was signed",
            Expect::Refuse,
            Some(tampered),
        ),
        (
            "wrong_signature",
            "a delivery signed with another key",
            Expect::Refuse,
            Some(forged),
        ),
        (
            "stale",
            "a delivery signed 10 minutes ago (Standard Webhooks only: Amebo's header has no time)",
            Expect::Refuse,
            standard.then_some(stale),
        ),
        (
            "reordered",
            "the signed JSON with its keys in another order (same meaning, other bytes)",
            Expect::Refuse,
            Some(reordered_body),
        ),
    ];
    let mut reports = Vec::new();
    for (check, sent, expected, delivery) in checks {
        let Some(delivery) = delivery else {
            continue;
        };
        let answer = send(&client, &args.url, &signer, &delivery).await;
        let (status, error) = match answer {
            Ok(status) => (Some(status), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let passed = match (expected, status) {
            (Expect::Accept | Expect::AcceptOnce, Some(s)) => (200..300).contains(&s),
            (Expect::Refuse, Some(s)) => (400..500).contains(&s),
            (_, None) => false,
        };
        reports.push(Report {
            check,
            sent,
            expected,
            status,
            error,
            passed,
        });
    }
    print(&reports, json, standard)?;
    let failed = reports.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        anyhow::bail!(
            "the receiver at {} failed {failed} of {} checks",
            args.url,
            reports.len()
        );
    }
    Ok(())
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    signer: &Signer,
    d: &Delivery,
) -> anyhow::Result<u16> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", d.timestamp.to_string());
    match signer {
        Signer::Standard(key) => {
            let other;
            let key = if d.forged {
                other = random_hex(32)?.into_bytes();
                &other
            } else {
                key
            };
            let signature =
                tidings_signatures::standard(key, &d.id, d.timestamp, d.signed.as_bytes());
            request = request.header("webhook-signature", signature);
        }
        Signer::Amebo(secret) => {
            let other;
            let secret = if d.forged {
                other = random_hex(32)?;
                &other
            } else {
                secret
            };
            request = request.header(
                "x-amebo-signature",
                tidings_signatures::amebo(secret, d.signed.as_bytes()),
            );
        }
    }
    let event = serde_json::from_str::<serde_json::Value>(&d.signed)?["event"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let response = request
        .header("x-amebo-event-id", event)
        .body(d.sent.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                anyhow::anyhow!("no answer in time")
            } else if e.is_connect() {
                anyhow::anyhow!("cannot connect")
            } else {
                anyhow::anyhow!("{e}")
            }
        })?;
    Ok(response.status().as_u16())
}

fn print(reports: &[Report], json: bool, standard: bool) -> anyhow::Result<()> {
    if json {
        return output::json(reports);
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.check.to_owned(),
                match r.expected {
                    Expect::Accept => "2xx",
                    Expect::AcceptOnce => "2xx, handled once",
                    Expect::Refuse => "4xx",
                }
                .to_owned(),
                r.status
                    .map_or_else(|| r.error.clone().unwrap_or_default(), |s| s.to_string()),
                if r.passed { "ok" } else { "FAILED" }.to_owned(),
                r.sent.to_owned(),
            ]
        })
        .collect();
    output::table(&["check", "expected", "answer", "verdict", "sent"], &rows);
    println!(
        "\nreplay: a 2xx is right, and the receiver must not have handled the event a second time \
         (drop repeats by event id or webhook-id); only its own logs can show that."
    );
    if !standard {
        println!(
            "stale: not checked; x-amebo-signature carries no time. Verify the Standard Webhooks \
             headers with the subscription's signing key to refuse stale and replayed deliveries."
        );
    }
    Ok(())
}
