//! A Redis server of the test's own, on a free port, to stop and restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port, with AOF (fsync on every
    /// write) if `aof`, keeping its files in `dir`. `None` (skip) if there
    /// is no redis-server and this is not CI.
    pub async fn start(dir: &Path, aof: bool) -> Option<Self> {
        let port = free_port();
        let mut server = Self {
            port,
            dir: dir.to_owned(),
            aof,
            child: None,
        };
        match server.launch().await {
            Ok(()) => Some(server),
            Err(e) => super::skip_or_fail(&e),
        }
    }

    async fn launch(&mut self) -> Result<(), String> {
        let appendonly = if self.aof { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {} never answered", self.port));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no shutdown save).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and directory.
    pub async fn restart(&mut self) {
        self.launch().await.unwrap();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A Redis Cluster of three primaries on free loopback ports, started for
/// one test and killed when dropped.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts it, or `None` (skip) outside CI if it cannot be started.
    pub async fn start(dir: &Path) -> Option<Self> {
        match Self::launch(dir).await {
            Ok(cluster) => Some(cluster),
            Err(e) => super::skip_or_fail(&e),
        }
    }

    async fn launch(dir: &Path) -> Result<Self, String> {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for port in &ports {
            nodes.push(spawn_node(dir, *port)?);
        }
        let cluster = Self {
            nodes,
            ports,
            dir: dir.to_owned(),
        };
        for port in &cluster.ports {
            wait_until(|| ping(*port), "a cluster node never answered").await?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        for port in &cluster.ports {
            wait_until(|| cluster_ok(*port), "the cluster never became ok").await?;
        }
        Ok(cluster)
    }

    /// Kills the node on `port` (SIGKILL) and starts it again without its
    /// data (nothing is persisted): it keeps its slots (nodes.conf) and
    /// comes back empty.
    pub async fn restart_empty(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        let _ = self.nodes[i].kill().await;
        self.nodes[i] = spawn_node(&self.dir, port).unwrap();
        wait_until(|| ping(port), "the node never answered again")
            .await
            .unwrap();
        for port in &self.ports {
            wait_until(|| cluster_ok(*port), "the cluster never became ok again")
                .await
                .unwrap();
        }
    }

    /// The port of the node that holds `key`.
    pub fn owner(&self, key: &str) -> u16 {
        *self
            .ports
            .iter()
            .find(|port| {
                redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                    .and_then(|mut c| redis::cmd("EXISTS").arg(key).query::<i64>(&mut c))
                    .is_ok()
            })
            .unwrap()
    }

    /// A broker URL for the cluster under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "redis://127.0.0.1:{}?cluster=true&prefix={prefix}",
            self.ports[0]
        )
    }
}

/// A cluster node that persists nothing, its files (nodes.conf) in `dir/<port>`.
fn spawn_node(dir: &Path, port: u16) -> Result<Child, String> {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&node_dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))
}

fn ping(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

fn cluster_ok(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}

async fn wait_until(ready: impl Fn() -> bool, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if Instant::now() > deadline {
            return Err(what.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
