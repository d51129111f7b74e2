//! TLS to PostgreSQL, on a server this test starts itself that takes TCP
//! connections over TLS only: what each `sslmode` checks of its
//! certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, GroupName, OutgoingMessage, QueueConfig, QueueName, ReceiveOptions,
};
use tidings_postgres::PostgresBroker;

use common::server::OwnServer;

/// A certificate authority, written to `ca.pem` in `dir`.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(dir: &Path, file: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(file), cert.pem()).unwrap();
        Self { cert, key }
    }

    /// A server certificate (chain) and its key, for `names`.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn start(certificate: &(String, String)) -> Option<OwnServer> {
    match OwnServer::start_with_tls(&certificate.0, &certificate.1) {
        Ok(server) => Some(server),
        Err(e) => common::skip_or_fail(&e),
    }
}

/// Sends and receives one message through a broker on `url`.
async fn round_trip(url: &str) -> Result<(), String> {
    let broker = PostgresBroker::open(url).await.map_err(|e| e.to_string())?;
    let q = QueueName::new("tls").unwrap();
    broker
        .create_queue(&q, QueueConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    broker
        .send(
            &q,
            OutgoingMessage::json(&json!({ "over": "tls" })).unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let got = broker
        .receive(
            &q,
            &GroupName::new("g").unwrap(),
            &ConsumerName::new("c").unwrap(),
            ReceiveOptions::new(10, std::time::Duration::ZERO),
        )
        .await
        .map_err(|e| e.to_string())?;
    assert!(!got.is_empty(), "the message came back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_checks_what_libpq_checks() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ca.pem");
    let _stranger = Authority::new(dir.path(), "other-ca.pem");
    let Some(server) = start(&authority.issue(&["127.0.0.1", "localhost"])) else {
        return;
    };
    let ca = dir.path().join("ca.pem").display().to_string();
    let other = dir.path().join("other-ca.pem").display().to_string();
    let url = |schema: &str, tls: &str| format!("{}&retry_for=0s&{tls}", server.url(schema));

    // The server takes no TCP connection without TLS.
    let plain = round_trip(&url("plain", "sslmode=disable")).await;
    let plain = plain.expect_err("a connection without TLS was let in");
    assert!(
        plain.contains("pg_hba.conf"),
        "the server's reason: {plain}"
    );

    // Verified against the right authority, and the host's name.
    round_trip(&url(
        "full",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    // Encrypted, unverified: libpq's require, and the default (prefer).
    round_trip(&url("required", "sslmode=require"))
        .await
        .unwrap();
    round_trip(&url("preferred", "")).await.unwrap();

    // Another authority, or the public ones: refused.
    for refused in [
        format!("sslmode=verify-full&sslrootcert={other}"),
        format!("sslmode=verify-ca&sslrootcert={other}"),
        format!("sslmode=require&sslrootcert={other}"),
        "sslmode=verify-full".to_owned(),
    ] {
        let outcome = round_trip(&url("refused", &refused)).await;
        let why = outcome.expect_err(&format!("{refused} let an unknown certificate in"));
        assert!(why.contains("invalid peer certificate"), "{refused}: {why}");
    }

    // A file that is not there says so.
    let missing = round_trip(&url(
        "missing",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .await
    .unwrap_err();
    assert!(missing.contains("sslrootcert"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_accepts_a_certificate_for_another_name_and_verify_full_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ca.pem");
    let Some(server) = start(&authority.issue(&["db.example.internal"])) else {
        return;
    };
    let ca = dir.path().join("ca.pem").display().to_string();
    let url = |schema: &str, mode: &str| {
        format!(
            "{}&retry_for=0s&sslmode={mode}&sslrootcert={ca}",
            server.url(schema)
        )
    };
    round_trip(&url("ca", "verify-ca")).await.unwrap();
    let full = round_trip(&url("full", "verify-full"))
        .await
        .expect_err("verify-full took a certificate for another host");
    assert!(full.contains("not valid for name"), "{full}");
}
