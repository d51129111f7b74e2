//! Running the real Python LeanMQ (tests/python/leanmq_peer.py).
//!
//! The interpreter is `TIDINGS_PYTHON` (`.ci/run` makes a virtualenv with
//! leanmq==0.2.0 from PyPI). Without it the tests fail under `CI=true` and
//! are skipped elsewhere.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::redis_url;

pub struct LeanMq {
    python: PathBuf,
    pub prefix: String,
}

impl LeanMq {
    /// The Python LeanMQ on the test Redis under `prefix`, or `None` (skip).
    pub async fn find(prefix: &str) -> Option<Self> {
        let python = match std::env::var("TIDINGS_PYTHON") {
            Ok(p) => PathBuf::from(p),
            Err(_) => return super::skip_or_fail(&"TIDINGS_PYTHON is not set"),
        };
        let probe = Command::new(&python)
            .args(["-c", "import leanmq"])
            .output()
            .await;
        match probe {
            Ok(out) if out.status.success() => Some(Self {
                python,
                prefix: prefix.to_owned(),
            }),
            Ok(out) => super::skip_or_fail(&format!(
                "{} cannot import leanmq: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => super::skip_or_fail(&format!("{}: {e}", python.display())),
        }
    }

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/leanmq_peer.py")
    }

    fn request(&self, mut req: Value) -> String {
        let (host, port, db) = redis_address();
        let obj = req.as_object_mut().unwrap();
        obj.insert("host".into(), json!(host));
        obj.insert("port".into(), json!(port));
        obj.insert("db".into(), json!(db));
        obj.entry("prefix").or_insert(json!(self.prefix));
        req.to_string()
    }

    /// Runs one command and returns its answer.
    pub async fn run(&self, req: Value) -> Value {
        let out = Command::new(&self.python)
            .arg(Self::script())
            .arg(self.request(req.clone()))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "python {req}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("python {req} answered {stdout:?}: {e}"))
    }

    /// Starts a long-running command (a webhook service) and waits until it
    /// says it is ready. `finish` collects its answer.
    pub async fn start(&self, req: Value) -> Running {
        let mut child = Command::new(&self.python)
            .arg(Self::script())
            .arg(self.request(req))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next_line().await.unwrap().unwrap_or_default();
        assert!(ready.contains("ready"), "{ready}");
        Running { child, lines }
    }
}

pub struct Running {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Running {
    pub async fn finish(mut self) -> Value {
        let line = self.lines.next_line().await.unwrap().unwrap_or_default();
        let _ = self.child.wait().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

/// Host, port and database of the test Redis.
pub fn redis_address() -> (String, u16, i64) {
    let url = redis_url();
    let rest = url
        .trim_start_matches("redis://")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let rest = rest.rsplit('@').next().unwrap_or_default();
    let (addr, db) = rest.split_once('/').unwrap_or((rest, "0"));
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
    (
        host.to_owned(),
        port.parse().unwrap_or(6379),
        db.parse().unwrap_or(0),
    )
}
