//! `tidings serve --tls-cert --tls-key` on a real process, with certificates
//! the test makes (rcgen): HTTPS answers, plain HTTP does not, the session
//! cookie is Secure, SIGHUP reloads the certificate (a broken one is
//! refused and the old one stays).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{expect_log, free_port, spawn_logged};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A certificate authority that signs server certificates for 127.0.0.1.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// Writes a server certificate and its key to `cert` and `key`.
    fn issue(&self, cert: &Path, key: &Path) {
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = params
            .signed_by(&server_key, &self.cert, &self.key)
            .unwrap();
        std::fs::write(cert, server.pem()).unwrap();
        std::fs::write(key, server_key.serialize_pem()).unwrap();
    }

    /// A client that trusts this authority only.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap(),
            )
            // A new connection per request: each sees the certificate in use.
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

fn spawn(dir: &Path, port: u16, cert: &Path, key: &Path) -> (Child, mpsc::Receiver<String>) {
    spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env("TIDINGS_BROKER", dir)
            .env("TIDINGS_LOG", "info")
            .stdout(Stdio::null()),
    )
}

fn hang_up(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = Authority::new();
    first.issue(&cert, &key);
    let port = free_port();
    let (mut child, log) = spawn(&dir.path().join("data"), port, &cert, &key);
    expect_log(&log, "tidings serve is listening");
    let base = format!("https://127.0.0.1:{port}");

    let r = first
        .client()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // The session cookie is Secure (protected mode: loopback is admin).
    let app = serde_json::json!({"application": "shop", "address": "https://shop.example/", "secret": "shop-secret-0123456789-abcdef-0123"});
    let post = |path: &str, body: serde_json::Value| {
        first
            .client()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(post("/v1/applications", app).await.unwrap().status(), 201);
    let login = serde_json::json!({"username": "shop", "password": "shop-secret-0123456789-abcdef-0123", "scheme": "token"});
    let r = post("/v1/tokens", login).await.unwrap();
    assert_eq!(r.status(), 202);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // A new certificate from another authority: used after SIGHUP.
    let second = Authority::new();
    second.issue(&cert, &key);
    hang_up(&child);
    expect_log(&log, "TLS certificate reloaded");
    let health = |authority: &Authority| authority.client().get(format!("{base}/health")).send();
    assert_eq!(health(&second).await.unwrap().status(), 200);
    assert!(
        health(&first).await.is_err(),
        "the old certificate is no longer offered"
    );

    // A broken key: refused, and the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    hang_up(&child);
    expect_log(&log, "TLS certificate not reloaded");
    assert_eq!(health(&second).await.unwrap().status(), 200);

    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_key_that_does_not_match_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let authority = Authority::new();
    authority.issue(&cert, &key);
    std::fs::write(&key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--bind", &format!("127.0.0.1:{}", free_port())])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("TIDINGS_BROKER", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use the TLS certificate"), "{err}");
}
