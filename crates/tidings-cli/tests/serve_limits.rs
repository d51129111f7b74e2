//! `tidings serve` under a low limit on open files, flooded with idle
//! connections: it keeps descriptors for its storage and for callers with
//! requests, so publishing keeps working and /readyz stays true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_ready};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_exhaust_the_servers_files() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // 512 files (soft and hard: the server cannot raise it), as `ulimit -n` does.
    let mut server = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 512 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_tidings"),
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--max-in-flight",
            "16",
        ])
        .env("TIDINGS_BROKER", dir.path())
        .env("TIDINGS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_ready(&http, &base).await;

    // Twice as many idle connections as the server has files.
    let mut idle = Vec::new();
    for _ in 0..1024 {
        if let Ok(socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(socket);
        }
    }
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
    };
    let r = post(
        "/v1/applications",
        json!({"application": "shop", "address": "http://shop.invalid"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        "/v1/actions",
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    for n in 0..200 {
        let r = post(
            "/v1/events",
            json!({"action": "shop.sold", "payload": {"n": n}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "publish {n}");
    }
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(idle);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// A data directory on a small tmpfs, unmounted when dropped (the server
/// first).
struct SmallDisk {
    dir: tempfile::TempDir,
    server: Option<std::process::Child>,
}

impl SmallDisk {
    /// `None` where tmpfs cannot be mounted (not root): outside CI only.
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a tmpfs (root is needed): the full-disk test must run in CI"
            );
            eprintln!("skipped: cannot mount a tmpfs here (not root)");
            return None;
        }
        Some(Self { dir, server: None })
    }

    fn resize(&self, megabytes: u32) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// With the disk full, publishing answers 507 and /readyz says unavailable
/// because the storage is full;
/// once space is freed, both recover without a restart, and what was
/// answered 201 before is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_until_space_is_freed() {
    let Some(mut disk) = SmallDisk::mount(24) else {
        return;
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data = disk.dir.path().join("data");
    disk.server = Some(common::spawn_server(&data, port, &[]));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_ready(&http, &base).await;
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
    };
    let app = json!({"application": "shop", "address": "http://shop.invalid"});
    assert_eq!(post("/v1/applications", app).await.unwrap().status(), 201);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(post("/v1/actions", action).await.unwrap().status(), 201);
    // Fill the disk.
    let padding = "x".repeat(16 * 1024);
    let mut published = 0;
    let (refused, body) = loop {
        let event = json!({"action": "shop.sold", "payload": {"n": published, "padding": padding}});
        let answer = post("/v1/events", event).await.unwrap();
        let status = answer.status();
        if status != 201 {
            break (status, answer.text().await.unwrap());
        }
        published += 1;
        assert!(published < 10_000, "the disk never filled");
    };
    // 507, saying so, with nothing of the server's insides.
    assert_eq!(refused, 507, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "storage_full", "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("Poisoned") && !text.contains(&*disk.dir.path().to_string_lossy()),
        "{text}"
    );
    // Whatever room is left, another process takes: the disk is full. (The
    // server may still free some, removing files it no longer needs: take
    // that too, until /readyz sees the disk full.)
    let filler = disk.dir.path().join("filler");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&filler)
        .unwrap();
    let block = vec![0u8; 4096];
    let mut unready = false;
    for _ in 0..50 {
        while std::io::Write::write_all(&mut file, &block).is_ok() {}
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            let probe: serde_json::Value =
                serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
            assert_eq!(probe["reason"], "storage_full", "{probe}");
            unready = true;
            break;
        }
    }
    drop(file);
    assert!(unready, "a full disk is not ready");
    // Free space: writes resume, without a restart.
    std::fs::remove_file(&filler).unwrap();
    disk.resize(256);
    let mut resumed = false;
    for _ in 0..400 {
        let event = json!({"action": "shop.sold", "payload": {"n": "after"}});
        if post("/v1/events", event).await.unwrap().status() == 201 {
            resumed = true;
            break;
        }
        // The store is reopened at most once a second (less often while
        // failures keep coming back).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "writes did not resume once space was freed");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // Every event answered 201 is there: before the disk filled, and after.
    let mut stored = 0;
    for page in 1.. {
        let body = http
            .get(format!(
                "{base}/v1/events?action=shop.sold&pagination=100&page={page}"
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        if rows.is_empty() {
            break;
        }
        stored += rows.len();
    }
    assert_eq!(stored, published + 1);
}

/// The storage's size and free space, retention's work and the oldest
/// event's age are in /metrics; free space under `--disk-free-warning`
/// is a warning in /readyz (still ready) and a gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness_tell_the_storage_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let flags = [
        "--disk-free-warning",
        "1000000TiB",
        "--retain-events",
        "1s",
        "--retention-interval",
        "1s",
    ];
    let mut server = common::spawn_server(dir.path(), port, &flags);
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let probe: serde_json::Value = serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
    assert!(
        probe["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("--disk-free-warning")),
        "{probe}"
    );
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let app = json!({"application": "shop", "address": "http://shop.invalid"});
    assert_eq!(post("/v1/applications", app).await.unwrap().status(), 201);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(post("/v1/actions", action).await.unwrap().status(), 201);
    let sale = json!({"action": "shop.sold", "payload": {"n": 1}});
    assert_eq!(post("/v1/events", sale).await.unwrap().status(), 201);
    // Retention removes the event within a few sweeps; the metrics say so.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("tidings_retention_removed_total{kind=\"events\"} 1") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(value("tidings_storage_used_bytes") > 0.0);
    assert!(value("tidings_storage_free_bytes") > 0.0);
    assert_eq!(value("tidings_storage_free_below_warning"), 1.0);
    assert!(value("tidings_retention_lag_seconds") < 30.0);
    assert!(value("tidings_oldest_event_age_seconds") >= 0.0);
    server.kill().unwrap();
    server.wait().unwrap();
}
