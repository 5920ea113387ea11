//! Runs file cases through routes and collects every unacceptable outcome.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::check::{self, Expect};
use super::py;
use super::routes::{self, Limits, Route};

/// How much a case lets a route refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A finished file nothing else changes and plain SQLite reads: the Open routes
    /// ([`Route::must_open`]) must copy it; the others may refuse with a clear error.
    Readable,
    /// Another process works on the file during the call: any route may refuse with a clear
    /// error, leaving the destination's old data.
    Contended,
}

/// Every file of this suite is a valid database at every moment, so a refusal saying
/// otherwise is false.
pub const INVALID: &str = "calls a valid database file invalid (BackupError::InvalidDatabase)";

/// A file ready for one route, with what a copy of it must hold.
pub struct Source {
    pub path: PathBuf,
    pub expect: Expect,
    /// A Python child that must outlive the route (a writer holding the file open); it is
    /// stopped when the source drops.
    pub _live: Option<py::Live>,
}

/// Runs one route on `source` and checks the outcome. `Ok` carries a one-line summary,
/// `Err` every problem found.
pub fn run_one(
    case: &str,
    route: Route,
    source: &Source,
    policy: Policy,
    limits: Limits,
) -> Result<String, String> {
    let scratch = tempfile::tempdir().unwrap();
    let label = format!("[{case}] {}", route.name());
    let checked = catch_unwind(AssertUnwindSafe(|| {
        judge(route, source, policy, limits, scratch.path())
    }));
    match checked {
        Ok(Ok(summary)) => Ok(format!("{label}: {summary}")),
        Ok(Err(problems)) => Err(format!("{label}:\n    {}", problems.join("\n    "))),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("{label}: panicked: {text}"))
        }
    }
}

fn judge(
    route: Route,
    source: &Source,
    policy: Policy,
    limits: Limits,
    scratch: &Path,
) -> Result<String, Vec<String>> {
    let mut outcome = routes::run(route, &source.path, limits);
    let (summary, mut problems) = match &outcome.result {
        Ok(()) => ("copied".to_string(), Vec::new()),
        Err(failure) => (format!("refused: {}", failure.message), Vec::new()),
    };
    match (&outcome.result, outcome.dest.as_mut()) {
        (Ok(()), Some(dest)) => problems.extend(check::copied(dest, &source.expect, scratch)),
        (Ok(()), None) => problems.push("returned Ok but produced no destination".into()),
        (Err(failure), dest) => {
            if policy == Policy::Readable && route.must_open() {
                problems.push("a finished file that plain SQLite reads must open".into());
            } else if let Some(why) = check::unclear(&failure.message) {
                problems.push(format!("the error is unclear: {why}"));
            }
            if failure.invalid {
                problems.push(INVALID.into());
            }
            if let Some(dest) = dest {
                problems.extend(check::kept(dest, &outcome.old, scratch));
            }
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        problems.insert(0, summary);
        Err(problems)
    }
}

/// Runs every route in `routes` on a fresh source from `make` (called once per route with an
/// empty directory), prints one line per route, and returns the failures.
pub fn run_all(
    case: &str,
    routes: &[Route],
    policy: Policy,
    limits: Limits,
    mut make: impl FnMut(&Path) -> Source,
) -> Vec<String> {
    let mut failures = Vec::new();
    for &route in routes {
        let dir = tempfile::tempdir().unwrap();
        let source = make(dir.path());
        match run_one(case, route, &source, policy, limits) {
            Ok(line) => println!("ok   {line}"),
            Err(problems) => {
                println!("FAIL {problems}");
                failures.push(problems);
            }
        }
        drop(source);
    }
    failures
}

/// Panics listing every failure, if there are any.
pub fn assert_none(case: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{case}: {} route(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A finished file (and any `-journal`/`-wal` beside it) kept untouched in its own
/// directory; each route gets a copy. The expectation is computed by Python on another copy,
/// so even a hot journal stays hot in the original.
pub struct Pristine {
    dir: tempfile::TempDir,
    name: String,
    pub expect: Expect,
}

impl Pristine {
    /// Keeps the database `name` in `dir` (with its side files); `probes` are queries with
    /// one column `n` whose values on a copy become part of the expectation.
    pub fn new(dir: tempfile::TempDir, name: &str, probes: &[&str]) -> Pristine {
        let mut pristine = Pristine {
            dir,
            name: name.to_string(),
            expect: Expect::Accounts { count: 0, total: 0 },
        };
        let reference = tempfile::tempdir().unwrap();
        let copy = pristine.copy_into(reference.path());
        let dump = py::dump(&copy);
        let probes = probes
            .iter()
            .map(|sql| {
                let n = py::scalar(&copy, sql);
                (
                    sql.to_string(),
                    n.trim().parse().expect("probe gives an integer"),
                )
            })
            .collect();
        pristine.expect = Expect::Exact { dump, probes };
        pristine
    }

    /// Copies the database and its side files into `dir`; returns the copy's path.
    pub fn copy_into(&self, dir: &Path) -> PathBuf {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let from = self.dir.path().join(format!("{}{suffix}", self.name));
            if from.exists() {
                std::fs::copy(&from, dir.join(format!("{}{suffix}", self.name))).unwrap();
            }
        }
        dir.join(&self.name)
    }

    /// A [`Source`] for one route: a fresh copy in `dir`.
    pub fn source(&self, dir: &Path) -> Source {
        Source {
            path: self.copy_into(dir),
            expect: self.expect.clone(),
            _live: None,
        }
    }
}
