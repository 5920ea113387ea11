//! A file this process's own connection holds in an EXCLUSIVE write transaction. Copying
//! it must wait and fail with a Busy error, and must not release the lock: POSIX locks
//! belong to the process, and closing ANY descriptor of the file (a `std::fs::File` opened
//! to read its header, say) drops them all, letting another process write under SQLite's
//! feet. A Python child probes with `BEGIN IMMEDIATE` and no wait after each call.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};

use super::check;
use super::matrix::{assert_none, INVALID};
use super::py;
use super::routes::{self, Limits, Route};

const LOCKED: &str = "error: database is locked";

fn probe(file: &std::path::Path) -> String {
    py::run(py::LOCK_PROBE, &[file.to_str().unwrap()])
        .trim()
        .to_string()
}

/// Runs each route on a fresh file held exclusively by this process, and returns the
/// failures.
fn on_own_locked_file(routes: &[Route]) -> Vec<String> {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        busy_steps: 40,
        max_steps: 20_000,
    };
    let mut failures = Vec::new();
    for &route in routes {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let file = dir.path().join("locked.db");
        py::run(py::MAKE_FILE, &[file.to_str().unwrap(), "page_size:4096"]);
        let committed = py::dump(&file);
        let mut holder = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        holder
            .batch_execute("BEGIN EXCLUSIVE; INSERT INTO rows_(label) VALUES ('uncommitted');")
            .unwrap();
        let before = probe(&file);
        assert_eq!(before, LOCKED, "set-up: the exclusive lock does not hold");

        let mut problems = Vec::new();
        let mut outcome = routes::run(route, &file, limits);
        match &outcome.result {
            Ok(()) => problems.push(
                "returned Ok for a file another connection holds EXCLUSIVE (expected Busy)".into(),
            ),
            Err(f) => {
                println!("     {}: refused: {}", route.name(), f.message);
                if !f.busy {
                    problems.push(format!("expected a Busy error, got: {}", f.message));
                }
                if let Some(why) = check::unclear(&f.message) {
                    problems.push(format!("unclear error ({why}): {}", f.message));
                }
                if f.invalid {
                    problems.push(INVALID.into());
                }
            }
        }
        if let Some(dest) = outcome.dest.as_mut() {
            if outcome.result.is_err() {
                problems.extend(check::kept(dest, &outcome.old, scratch.path()));
            }
        }
        let after = probe(&file);
        if after != LOCKED {
            problems.push(format!(
                "afterwards another process could take the write lock this process holds \
                 (Python's BEGIN IMMEDIATE said {after:?}): the call dropped this process's \
                 POSIX locks on the file"
            ));
        }
        if let Err(e) = holder.batch_execute("ROLLBACK") {
            problems.push(format!("the holder's ROLLBACK failed afterwards: {e}"));
        }
        drop(holder);
        let now = py::dump(&file);
        if now != committed {
            problems.push(format!(
                "the file's committed content changed: {}",
                check::diff(&committed, &now)
            ));
        }
        let label = format!("[own locked file] {}", route.name());
        if problems.is_empty() {
            println!("ok   {label}: refused, lock kept");
        } else {
            let failure = format!("{label}:\n    {}", problems.join("\n    "));
            println!("FAIL {failure}");
            failures.push(failure);
        }
    }
    failures
}

/// `restore_from` with a 300 ms timeout, into a fresh and into a used pool, and the
/// connection routes (`backup_to`, the stepped handle, `Template::from_connection`).
#[test]
fn own_locked_file() {
    let failures = on_own_locked_file(&[
        Route::Restore {
            used: false,
            verify: false,
        },
        Route::Restore {
            used: true,
            verify: false,
        },
        Route::BackupTo { used: true },
        Route::Stepped { used: true },
        Route::FromConnConnection,
        Route::FromConnCopyInto,
    ]);
    assert_none("own locked file", failures);
}

/// `Template::from_file` takes no options, so it waits the default 30 s deadline.
#[test]
fn own_locked_file_template_from_file() {
    let failures = on_own_locked_file(&[Route::FromFileConnection]);
    assert_none("own locked file", failures);
}
