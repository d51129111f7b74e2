//! The `tidings` command end to end: a real process on a real data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(args)
            .env("TIDINGS_BROKER", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with_stdin(args, "");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_with_stdin(args, "");
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[test]
fn queue_lifecycle_with_json_output() {
    let cli = Cli::new();
    assert_eq!(
        cli.json(&["queue", "create", "orders", "--max-deliveries", "3"])["created"],
        true
    );
    assert_eq!(
        cli.json(&["queue", "create", "orders", "--max-deliveries", "3"])["created"],
        false
    );
    let sent = cli.json(&[
        "queue",
        "send",
        "orders",
        r#"{"order": 1}"#,
        "--header",
        "trace=t1",
    ]);
    let id = sent[0]["id"].as_str().unwrap().to_owned();

    let out = cli.run_with_stdin(
        &["--json", "queue", "send", "orders"],
        "{\"order\": 2}\n{\"order\": 3}\n",
    );
    assert!(out.status.success());
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(batch.as_array().unwrap().len(), 2);

    let got = cli.json(&[
        "queue", "receive", "orders", "--group", "billing", "--max", "1",
    ]);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["payload"]["order"], 1);
    assert_eq!(got[0]["headers"]["trace"], "t1");
    assert_eq!(got[0]["delivery_count"], 1);
    assert_eq!(
        cli.json(&["queue", "ack", "orders", "--group", "billing", &id])["acked"],
        1
    );

    let info = cli.json(&["queue", "info", "orders"]);
    assert_eq!(info["length"], 2);
    assert_eq!(info["config"]["max_deliveries"], 3);
    assert_eq!(info["groups"][0]["name"], "billing");

    let drained = cli.json(&["queue", "receive", "orders", "--group", "billing", "--ack"]);
    assert_eq!(drained.as_array().unwrap().len(), 2);
    assert_eq!(cli.json(&["queue", "info", "orders"])["length"], 0);
    assert_eq!(cli.json(&["queue", "list"]), serde_json::json!(["orders"]));
    cli.ok(&["queue", "delete", "orders"]);
    assert_eq!(cli.json(&["queue", "list"]), serde_json::json!([]));
}

#[test]
fn human_tables_and_dead_letters() {
    let cli = Cli::new();
    cli.ok(&["queue", "create", "jobs"]);
    cli.ok(&["queue", "send", "jobs", r#"{"job": "x"}"#]);
    let table = cli.ok(&["queue", "receive", "jobs", "--group", "g"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(cli.ok(&["queue", "list"]).contains("jobs"));
    assert!(cli.ok(&["queue", "info", "jobs"]).contains("GROUP"));
    assert!(
        cli.json(&["dlq", "list", "jobs"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        cli.json(&["dlq", "requeue", "jobs", "--all"])["requeued"],
        0
    );
    assert_eq!(cli.json(&["queue", "purge", "jobs"])["purged"], 1);
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let cli = Cli::new();
    assert!(
        cli.fails(&["queue", "create", "bad name"])
            .contains("invalid queue name")
    );
    assert!(
        cli.fails(&["queue", "info", "ghost"])
            .contains("does not exist")
    );
    cli.ok(&["queue", "create", "q"]);
    assert!(
        cli.fails(&["queue", "send", "q", "{not json"])
            .contains("not valid JSON")
    );
    assert!(
        cli.fails(&["queue", "send", "q", "1", "--header", "novalue"])
            .contains("NAME=VALUE")
    );
    assert!(cli.fails(&["dlq", "purge", "q"]).contains("--all"));
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--broker", "nats://localhost", "queue", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available"));
}

#[test]
fn the_cli_manages_queues_on_redis() {
    let redis =
        std::env::var("TIDINGS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let prefix = format!(
        "tidings-test:cli-{}:",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    let sep = if redis.contains('?') { '&' } else { '?' };
    let broker = format!("{redis}{sep}prefix={prefix}");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(args)
            .env("TIDINGS_BROKER", &broker)
            .output()
            .unwrap()
    };
    let probe = run(&["queue", "list"]);
    if !probe.status.success() {
        let err = String::from_utf8_lossy(&probe.stderr);
        assert!(!ci, "Redis is required under CI=true: {err}");
        eprintln!("skipped: Redis not reachable at {redis}: {err}");
        return;
    }
    assert!(run(&["queue", "create", "orders"]).status.success());
    assert!(
        run(&["queue", "send", "orders", r#"{"order": 1}"#])
            .status
            .success()
    );
    let info = run(&["--json", "queue", "info", "orders"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["length"], 1);
    assert!(run(&["queue", "delete", "orders"]).status.success());
    let list = run(&["--json", "queue", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
}

#[test]
fn a_directory_in_use_by_another_process_is_refused() {
    let cli = Cli::new();
    let _holder = tidings::EmbeddedBroker::open(cli.dir.path()).unwrap();
    let err = cli.fails(&["queue", "list"]);
    assert!(err.contains("locked by another process"), "{err}");
    // A second hub on the same directory says what to do instead.
    let err = cli.fails(&["serve", "--bind", "127.0.0.1:0"]);
    assert!(err.contains("locked by another process"), "{err}");
    assert!(err.contains("one process at a time"), "{err}");
    assert!(err.contains("Redis or PostgreSQL"), "{err}");
}
