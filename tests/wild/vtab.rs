//! FTS5, FTS4 and R*Tree files through every route, with and without
//! `verify_integrity(true)`. Each route runs in a child process (this test binary again), so
//! a crash (SIGSEGV, abort) is reported as that route's failure instead of killing the
//! runner.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cases::made_file;
use super::matrix::{assert_none, run_one, Policy};
use super::py;
use super::routes::{Limits, Route};

const CHILD: &str = "DSB_WILD_VTAB_CHILD";
const BEGIN: &str = "WILD-REPORT-BEGIN";
const END: &str = "WILD-REPORT-END";

/// The child: runs the one route named in `DSB_WILD_VTAB_CHILD` (`kind|route`); does
/// nothing in a normal run.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (kind, route) = spec.split_once('|').expect("kind|route");
    let pristine = made_file(kind);
    let dir = tempfile::tempdir().unwrap();
    let source = pristine.source(dir.path());
    let result = run_one(
        kind,
        Route::parse(route),
        &source,
        Policy::Readable,
        Limits::default(),
    );
    let report = match &result {
        Ok(line) => format!("ok   {line}"),
        Err(problems) => format!("FAIL {problems}"),
    };
    println!("{BEGIN}\n{report}\n{END}");
    assert!(result.is_ok(), "{report}");
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        _ => "signal",
    }
}

/// How long a child may run before it counts as hung (a deadlock): a healthy one finishes
/// in about a second. A hang guard, not a timing assertion.
const HANG: Duration = Duration::from_secs(90);

/// What became of one child process.
struct ChildRun {
    stdout: String,
    stderr: String,
    /// The exit status, or `None` when it hung and was killed.
    status: Option<ExitStatus>,
}

fn run_child(kind: &str, route: Route) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "vtab::child", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{kind}|{}", route.name()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-run the test binary");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ChildRun {
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        status,
    }
}

/// Runs every route for files of `kind` in child processes and fails with every route that
/// failed, crashed or hung.
fn in_children(kind: &str) {
    let has = py::run(py::HAS_MODULE, &[kind]);
    if !has.starts_with("yes") {
        println!(
            "skipped: Python's sqlite3 cannot make {kind} tables ({})",
            has.trim()
        );
        return;
    }
    let mut failures = Vec::new();
    for route in Route::all(true) {
        let run = run_child(kind, route);
        let report = run
            .stdout
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(report, _)| report.trim().to_string());
        let passed = run.status.is_some_and(|s| s.success()) && run.stdout.contains("1 passed");
        if passed {
            println!("{}", report.unwrap_or_default());
            continue;
        }
        let failure = match (report, run.status) {
            (Some(report), Some(status)) if status.signal().is_none() => {
                report.trim_start_matches("FAIL ").to_string()
            }
            (report, status) => {
                let how = match status {
                    None => format!("child process hung (no exit after {HANG:?}; killed)"),
                    Some(s) => match s.signal() {
                        Some(sig) => format!(
                            "child process crashed with signal {sig} ({})",
                            signal_name(sig)
                        ),
                        None => format!("child process failed ({s})"),
                    },
                };
                let tail: Vec<&str> = run.stderr.lines().rev().take(4).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "[{kind}] {}: {how}{}{}",
                    route.name(),
                    report
                        .map(|r| format!("\n    last report: {r}"))
                        .unwrap_or_default(),
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!("\n    stderr tail: {}", tail.join(" | "))
                    }
                )
            }
        };
        println!("FAIL {failure}");
        failures.push(failure);
    }
    assert_none(kind, failures);
}

#[test]
fn fts5_tables() {
    in_children("fts5");
}

#[test]
fn fts4_tables() {
    in_children("fts4");
}

#[test]
fn rtree_tables() {
    in_children("rtree");
}
