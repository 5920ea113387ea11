//! The independent SQLite writer and reader: Python's `sqlite3` module in child processes,
//! running the scripts of [`super::scripts`].

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub use super::scripts::*;

/// A hang guard for waits on Python children, never a timing assertion: a healthy child
/// answers in milliseconds.
const PATIENCE: Duration = Duration::from_secs(120);

fn command(body: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!("{PRELUDE}\n{body}")).args(args);
    cmd
}

/// Runs a script to completion and returns its stdout; panics with its stderr if it fails.
pub fn run(body: &str, args: &[&str]) -> String {
    let out = command(body, args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed ({}) with args {args:?}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python prints ASCII")
}

/// Runs a script to completion whatever its exit status (a script may kill itself).
pub fn run_unchecked(body: &str, args: &[&str]) -> std::process::Output {
    command(body, args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs")
}

/// The canonical dump of the database file at `path`, as a fresh Python process sees it.
pub fn dump(path: &Path) -> String {
    run(DUMP, &[path.to_str().unwrap()])
}

/// One value of `sql` on the file at `path`, as Python sees it.
pub fn scalar(path: &Path, sql: &str) -> String {
    run(SCALAR, &[path.to_str().unwrap(), sql])
}

/// A long-running Python child: stdout read line by line on a thread, killed on drop.
pub struct Live {
    child: Child,
    lines: Receiver<String>,
    stop: PathBuf,
    seen: Vec<String>,
}

impl Live {
    /// Starts `body` with `args`; it stops once the file `stop` exists.
    pub fn spawn(body: &str, args: &[&str], stop: &Path) -> Live {
        let mut child = command(body, args)
            .env("WILD_STOP", stop)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Live {
            child,
            lines,
            stop: stop.to_path_buf(),
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line starting with `prefix` and returns it.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("python child never said {prefix:?}; said {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    let stderr = self.stderr();
                    panic!(
                        "python child ended ({status}) before saying {prefix:?}; said {:?}\n{stderr}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Waits (bounded) for the child to exit by itself, killing it past the bound.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("python child did not exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Tells the child to stop, waits for it, and returns its last `done` line.
    pub fn stop(mut self) -> String {
        std::fs::write(&self.stop, b"stop").unwrap();
        let status = self.wait_exit();
        let stderr = self.stderr();
        assert!(
            status.success(),
            "python child failed ({status}):\n{stderr}"
        );
        let mut last = String::new();
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            last = line;
        }
        last
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = std::fs::write(&self.stop, b"stop");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
