//! A PostgreSQL server of the test's own: `initdb` in a temporary
//! directory, started with `pg_ctl` on a free port, so a test may crash
//! and restart it without touching the shared one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The installed server's programs: `TIDINGS_PG_BINDIR`, or the newest
/// `/usr/lib/postgresql/<version>/bin` that has `initdb`.
pub fn bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TIDINGS_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A running server, stopped (immediately) and deleted when dropped.
#[derive(Debug)]
pub struct OwnServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl OwnServer {
    /// Creates and starts a server; `Err` says why it could not.
    pub fn start() -> Result<Self, String> {
        Self::start_with(None)
    }

    /// A server that takes TCP connections over TLS only, with this
    /// certificate chain and key (PEM); its Unix socket stays open.
    pub fn start_with_tls(certificate: &str, key: &str) -> Result<Self, String> {
        Self::start_with(Some((certificate, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<Self, String> {
        let bin = bindir().ok_or("no PostgreSQL server programs (initdb) installed")?;
        let dir = tempfile::Builder::new()
            .prefix("tidings-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let server = Self { bin, dir, port };
        if let Some(owner) = owner()? {
            std::os::unix::fs::chown(server.dir.path(), Some(owner), None)
                .map_err(|e| e.to_string())?;
        }
        let owner = owner()?;
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        if let Some((certificate, key)) = tls {
            let write = |name: &str, text: &str| {
                let file = data.join(name);
                std::fs::write(&file, text).map_err(|e| e.to_string())?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| e.to_string())?;
                if let Some(owner) = owner {
                    std::os::unix::fs::chown(&file, Some(owner), None)
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            };
            write("server.crt", certificate)?;
            write("server.key", key)?;
            write(
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )?;
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut conf, b"ssl = on\n").map_err(|e| e.to_string())?;
        }
        server.run_pg_ctl(&["start"])?;
        Ok(server)
    }

    /// The directory of its Unix socket (connections there need no TLS).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A broker URL for `schema` on this server.
    pub fn url(&self, schema: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?schema={schema}",
            self.port
        )
    }

    /// Stops the server the way a crash does (no checkpoint, connections
    /// cut), then starts it again: it recovers from its write-ahead log.
    pub fn crash_and_restart(&self) -> Result<(), String> {
        self.run_pg_ctl(&["stop", "-m", "immediate"])?;
        self.run_pg_ctl(&["start"])
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run_pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            path(self.dir.path())
        );
        let mut all = vec!["-D", path(&data), "-l", path(&log), "-w", "-o", &options];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.run_pg_ctl(&["stop", "-m", "immediate"]);
    }
}

/// Under root, the user the data must belong to (initdb and postgres
/// refuse root): `postgres`.
fn owner() -> Result<Option<u32>, String> {
    if !running_as_root() {
        return Ok(None);
    }
    Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(Some)
        .ok_or_else(|| "running as root, and there is no postgres user to run the server as".into())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| o.stdout.trim_ascii() == b"0")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}
