//! The Python client (clients/python) against a real server: its own tests
//! (the queue API, the hub client and the receiver's toolkit), run by the
//! interpreter in `TIDINGS_PYTHON` (`.ci/run` installs the client into its
//! virtualenv). The server has an admin key, given to the tests in
//! `TIDINGS_ADMIN_KEY`, and delivers to 127.0.0.1 (the tests' receivers).
//! Without an interpreter the test fails under `CI=true` and is skipped
//! elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::TestServer;
use tidings_embedded::EmbeddedBroker;
use tidings_hub::HubConfig;

const ADMIN_KEY: &str = "python-client-tests-admin-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_tests_against_the_server() {
    let python = match std::env::var("TIDINGS_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("TIDINGS_PYTHON is not set (CI must run the Python client's tests)")
        }
        Err(_) => {
            eprintln!("skipped: TIDINGS_PYTHON is not set");
            return;
        }
    };
    let config = HubConfig {
        destinations: tidings_hub::DestinationPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        ..HubConfig::default()
    };
    let server = TestServer::start_hub(
        Arc::new(EmbeddedBroker::in_memory()),
        Some(ADMIN_KEY),
        config,
    )
    .await;
    let client_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let out = tokio::process::Command::new(&python)
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
        .current_dir(&client_dir)
        .env("TIDINGS_URL", &server.base)
        .env("TIDINGS_ADMIN_KEY", ADMIN_KEY)
        .env_remove("TIDINGS_API_KEY")
        .env("PYTHONPATH", &client_dir)
        .output()
        .await
        .expect("run the Python tests");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Python client tests failed:\n{report}"
    );
    assert!(report.contains("OK"), "{report}");
    eprintln!("{report}");
    server.stop().await;
}
