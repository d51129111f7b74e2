//! The clients in other languages against a real server, each running its
//! own test suite: the Python client (clients/python: the queue API, the hub
//! client, the receiver's toolkit) with the interpreter in `TIDINGS_PYTHON`
//! (`.ci/run` installs the client into its virtualenv), and the TypeScript
//! client (clients/typescript: `npm test`, after `npm ci` if its
//! dependencies are not installed yet). Each gets a server of its own with an
//! admin key (in `TIDINGS_ADMIN_KEY`) that delivers to 127.0.0.1 (the
//! tests' receivers). Without the interpreter or npm a test fails under
//! `CI=true` and is skipped elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::TestServer;
use tidings_embedded::EmbeddedBroker;
use tidings_hub::HubConfig;

const ADMIN_KEY: &str = "client-tests-admin-key";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A server with the admin key that delivers to 127.0.0.1.
async fn server() -> TestServer {
    let config = HubConfig {
        destinations: tidings_hub::DestinationPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        ..HubConfig::default()
    };
    TestServer::start_hub(
        Arc::new(EmbeddedBroker::in_memory()),
        Some(ADMIN_KEY),
        config,
    )
    .await
}

fn client_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../clients")
        .join(name)
}

/// Runs a client's test command against `server`.
async fn run(program: &Path, args: &[&str], dir: &Path, server: &TestServer) -> Output {
    tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("TIDINGS_URL", &server.base)
        .env("TIDINGS_ADMIN_KEY", ADMIN_KEY)
        .env_remove("TIDINGS_API_KEY")
        .env("PYTHONPATH", dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn report(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_tests_against_the_server() {
    let python = match std::env::var("TIDINGS_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) if in_ci() => {
            panic!("TIDINGS_PYTHON is not set (CI must run the Python client's tests)")
        }
        Err(_) => {
            eprintln!("skipped: TIDINGS_PYTHON is not set");
            return;
        }
    };
    let server = server().await;
    let args = ["-m", "unittest", "discover", "-s", "tests", "-v"];
    let out = run(&python, &args, &client_dir("python"), &server).await;
    let report = report(&out);
    assert!(
        out.status.success(),
        "Python client tests failed:\n{report}"
    );
    assert!(report.contains("OK"), "{report}");
    eprintln!("{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_tests_against_the_server() {
    let npm = PathBuf::from("npm");
    let dir = client_dir("typescript");
    let version = tokio::process::Command::new(&npm)
        .arg("--version")
        .output()
        .await;
    if !version.is_ok_and(|v| v.status.success()) {
        assert!(
            !in_ci(),
            "npm is missing (CI must run the TypeScript client's tests)"
        );
        eprintln!("skipped: npm is not installed");
        return;
    }
    if !dir.join("node_modules/.bin/tsc").exists() {
        let install = tokio::process::Command::new(&npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .unwrap();
        assert!(
            install.status.success(),
            "npm ci failed:\n{}",
            report(&install)
        );
    }
    let server = server().await;
    let out = run(&npm, &["test"], &dir, &server).await;
    let report = report(&out);
    assert!(
        out.status.success(),
        "TypeScript client tests failed:\n{report}"
    );
    assert!(report.contains("# fail 0"), "{report}");
    eprintln!("{report}");
    server.stop().await;
}
