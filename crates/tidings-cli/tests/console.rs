//! The console in a real browser: Debian's headless Chromium driven by
//! playwright-core (tests/browser, `npm test`), against a real
//! `tidings serve` process with an admin key and an embedded store on
//! disk, delivering to the test's receiver on 127.0.0.1. Screenshots of
//! every page go to target/console-screenshots.
//!
//! Without Chromium or npm the test fails under `CI=true` (`.ci/run`
//! installs both) and is skipped elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

const ADMIN_KEY: &str = "console-tests-admin-key-0123456789";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var("CHROMIUM")
        .map_or_else(|_| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    path.exists().then_some(path)
}

fn skip_or_fail(why: &str) {
    assert!(!in_ci(), "{why} (CI must run the console's browser tests)");
    eprintln!("skipped: {why}");
}

fn npm_available() -> bool {
    std::process::Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn install(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "npm ci failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        skip_or_fail("Chromium is not installed (apt-get install -y chromium)");
        return;
    };
    if !npm_available() {
        skip_or_fail("npm is not installed");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    install(&dir);
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut server = common::spawn_server(
        data.path(),
        port,
        &[
            "--admin-key",
            ADMIN_KEY,
            "--allow-destination",
            "127.0.0.1/32",
            "--console-every",
            "1s",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    common::wait_ready(&reqwest::Client::new(), &base).await;

    let out = tokio::process::Command::new("npm")
        .arg("test")
        .current_dir(&dir)
        .env("TIDINGS_URL", &base)
        .env("TIDINGS_ADMIN_KEY", ADMIN_KEY)
        .env("TIDINGS_SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser tests failed:\n{report}");
    assert!(report.contains("# fail 0"), "{report}");
    eprintln!("{report}\nscreenshots: {}", shots.display());
}
