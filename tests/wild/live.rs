//! Files another process changes during the call. Content moves, so a copy must be one
//! consistent snapshot (an invariant), or the call must refuse clearly and keep the old data.

use diesel_sqlite_backup::{BackupError, BackupExt};

use super::check::{self, dest_dump, used_dump, used_pool, Dest, Expect};
use super::matrix::{assert_none, run_all, Policy, Source, INVALID};
use super::py;
use super::routes::{Limits, Route};

const ACCOUNTS: i64 = 200;
const TOTAL: i64 = 200_000;

/// Runs every route three times on a file a Python process keeps moving money around in
/// (`mode`: `wal` with TRUNCATE/PASSIVE checkpoints, or `delete`), one transfer per
/// transaction: each copy must hold 200 accounts summing to 200000 and pass
/// `integrity_check`.
fn under_transfers(mode: &str, case: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bank.db");
    let mut writer = py::Live::spawn(
        py::TRANSFERS,
        &[
            file.to_str().unwrap(),
            mode,
            &ACCOUNTS.to_string(),
            &TOTAL.to_string(),
        ],
        &dir.path().join("stop"),
    );
    writer.wait_for("ready");
    let mut failures = Vec::new();
    for _round in 0..3 {
        failures.extend(run_all(
            case,
            &Route::all(true),
            Policy::Contended,
            Limits::default(),
            |_| Source {
                path: file.clone(),
                expect: Expect::Accounts {
                    count: ACCOUNTS,
                    total: TOTAL,
                },
                _live: None,
            },
        ));
    }
    println!("writer: {}", writer.stop());
    assert_none(case, failures);
}

/// WAL while another process writes and checkpoints (TRUNCATE and PASSIVE) in a loop.
#[test]
fn wal_with_checkpointing_writer() {
    under_transfers("wal", "WAL, checkpointing writer");
}

/// A rollback-journal (DELETE mode) file whose writer commits in a loop during the calls.
#[test]
fn rollback_journal_with_live_writer() {
    under_transfers("delete", "rollback journal, live writer");
}

/// A Python process keeps replacing the file by an atomic rename of a complete database A
/// or B (different contents and page sizes). A hundred restores into a used pool: each
/// either succeeds holding exactly A or exactly B, or fails with a clear error (one that
/// does not call the complete file invalid) leaving the pool's previous content; the pool
/// passes `integrity_check` and stays usable throughout. A race shows up in some runs only,
/// so more restores catch it more often.
#[test]
fn file_replaced_by_atomic_rename() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    let mut renamer = py::Live::spawn(
        py::RENAMER,
        &[dir.path().to_str().unwrap(), file.to_str().unwrap()],
        &dir.path().join("stop"),
    );
    renamer.wait_for("ready");
    let a = py::dump(&dir.path().join("a.db"));
    let b = py::dump(&dir.path().join("b.db"));
    let scratch = tempfile::tempdir().unwrap();
    let pool = used_pool();
    let mut dest = Dest::Pool(pool.clone());
    let mut previous = used_dump();
    let (mut got_a, mut got_b, mut refused) = (0, 0, 0);
    let mut failures = Vec::new();
    for i in 0..100 {
        let result = pool.get().unwrap().restore_from(&file);
        let mut problems = Vec::new();
        match dest_dump(&mut dest, scratch.path()) {
            Err(e) => problems.push(e),
            Ok(now) => match &result {
                Ok(()) if now == a || now == b => {
                    if now == a {
                        got_a += 1;
                    } else {
                        got_b += 1;
                    }
                    previous = now;
                }
                Ok(()) => problems.push(format!(
                    "returned Ok but the pool holds neither A ({}) nor B ({})",
                    check::diff(&a, &now),
                    check::diff(&b, &now)
                )),
                Err(e) => {
                    refused += 1;
                    println!("     restore {i} refused: {e}");
                    if let Some(why) = check::unclear(&e.to_string()) {
                        problems.push(format!("refused with an unclear error ({why}): {e}"));
                    }
                    if matches!(e, BackupError::InvalidDatabase { .. }) {
                        problems.push(format!("refused ({e}): {INVALID}"));
                    }
                    if now != previous {
                        problems.push(format!(
                            "refused ({e}) but changed the old data: {}",
                            check::diff(&previous, &now)
                        ));
                        previous = now;
                    }
                }
            },
        }
        match dest.with(check::integrity) {
            Ok(report) if report == "ok" => {}
            Ok(report) => problems.push(format!("integrity_check: {report}")),
            Err(e) => problems.push(e),
        }
        if let Err(e) = check::usable(&mut dest) {
            problems.push(e);
        }
        if !problems.is_empty() {
            let failure = format!("restore {i}: {}", problems.join("; "));
            println!("FAIL {failure}");
            failures.push(failure);
        }
    }
    println!("renamer: {}", renamer.stop());
    println!("restores: {got_a} gave A, {got_b} gave B, {refused} refused");
    assert_none("file replaced by atomic rename", failures);
}
