//! Tests that run part of themselves in a child process (to kill it or let
//! it abort): the test binary starts itself again, running only the child
//! test, with the data directory in an environment variable.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::Path;
use std::process::Command;

/// This test binary, to run only the test `child` with `dir` in `var`.
pub fn child(child: &str, var: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", child, "--nocapture", "--test-threads", "1"])
        .env(var, dir);
    command
}

/// In a child started by [`child`], runs `work` with the data directory on
/// a runtime of its own; in any other run of the test, does nothing.
pub fn as_child<F, Fut>(var: &str, work: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(dir) = std::env::var(var) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(work(dir));
}
