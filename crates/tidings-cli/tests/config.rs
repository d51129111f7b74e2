//! `tidings serve --config FILE`: the documented example starts a server;
//! a file sets options (the admin key, the destination allow-list, the
//! broker) and flags and variables override it; an unknown key stops the
//! server with an error naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{free_port, wait_ready};
use serde_json::json;

fn serve(config: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env_remove("TIDINGS_BROKER")
        .env_remove("TIDINGS_ADMIN_KEY")
        .env("TIDINGS_LOG", "warn")
        .stdout(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().unwrap()
}

async fn status(base: &str, path: &str, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.header("x-amebo-admin-key", key);
    }
    request.send().await.unwrap().status().as_u16()
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configuration_starts_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/tidings.example.toml"
    ))
    .unwrap();
    let data = dir.path().join("data");
    let text = example.replace(
        "broker = \"./tidings-data\"",
        &format!("broker = {:?}", data.display().to_string()),
    );
    assert_ne!(text, example, "the example names its broker");
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, text).unwrap();
    let port = free_port();
    let child = serve(&config, port, &[], &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&reqwest::Client::new(), &base).await;
    assert!(data.exists(), "the file's broker is used");
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sets_options_and_flags_and_variables_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "broker = {:?}\nadmin_key = \"file-admin-key-0123456789\"\nallow_destinations = [\"127.0.0.1\"]\nheader_timeout = \"5s\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = serve(&config, port, &[], &[]);
    wait_ready(&reqwest::Client::new(), &base).await;
    assert_eq!(status(&base, "/v1/applications", None).await, 401);
    let key = Some("file-admin-key-0123456789");
    assert_eq!(status(&base, "/v1/applications", key).await, 200);
    // The file's allow-list lets a loopback handler through (with an admin
    // key, only public addresses are by default).
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("x-amebo-admin-key", "file-admin-key-0123456789")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let app = json!({"application": "shop", "address": "http://127.0.0.1:9/"});
    assert_eq!(post("/v1/applications", app).await.unwrap().status(), 201);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(post("/v1/actions", action).await.unwrap().status(), 201);
    let sub = json!({"application": "shop", "action": "shop.sold", "handler": "/hook"});
    assert_eq!(post("/v1/subscriptions", sub).await.unwrap().status(), 201);
    stop(child);

    // A flag overrides the file; so does a variable.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = serve(
        &config,
        port,
        &["--admin-key", "flag-admin-key-0123456789"],
        &[],
    );
    wait_ready(&reqwest::Client::new(), &base).await;
    assert_eq!(status(&base, "/v1/applications", key).await, 401);
    let flag = Some("flag-admin-key-0123456789");
    assert_eq!(status(&base, "/v1/applications", flag).await, 200);
    stop(child);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [("TIDINGS_ADMIN_KEY", "env-admin-key-0123456789")];
    let child = serve(&config, port, &[], &env);
    wait_ready(&reqwest::Client::new(), &base).await;
    assert_eq!(status(&base, "/v1/applications", key).await, 401);
    let from_env = Some("env-admin-key-0123456789");
    assert_eq!(status(&base, "/v1/applications", from_env).await, 200);
    stop(child);
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "admin_kye = \"typo\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .env("TIDINGS_BROKER", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_kye"), "{err}");
    // A file that is not there is an error too, not an empty configuration.
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .env("TIDINGS_BROKER", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}
