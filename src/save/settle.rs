//! The logs an old file leaves beside a destination, settled before a save renames over it.

use std::fs;
use std::path::Path;

use libsqlite3_sys as ffi;

use crate::error::BusyReason;
use crate::error::{BackupError, SqliteFailure};
use crate::fs::{journal_of, wal_of};
use crate::sqlite::{is_busy, Budget, BudgetedBusyHandler};
use crate::sqlite::{path_cstring, OwnedDb};

/// A `-wal` or `-journal` beside the destination belongs to the old file, and SQLite pairs
/// logs with files by name: after the rename it would replay the old log over the new file.
/// So the old file is first opened with SQLite, which recovers it (checkpoints a WAL, rolls a
/// hot journal back) and, switched to rollback-journal mode, deletes its log. While another
/// connection still uses the log (a writer's journal, a WAL), the save waits for it within
/// the budget, looking again after each wait; if it is still in use when the budget is
/// spent, the save fails with Busy and replaces nothing. Only metadata is read through
/// `std::fs`.
pub(crate) fn settle_logs(dest: &Path, budget: &Budget) -> Result<(), BackupError> {
    let logs = [wal_of(dest), journal_of(dest)];
    let present = || logs.iter().any(|l| fs::symlink_metadata(l).is_ok());
    if !present() {
        return Ok(());
    }
    let op = budget.op();
    if fs::symlink_metadata(dest).is_err() {
        return Err(BackupError::InvalidInput {
            op,
            path: dest.to_path_buf(),
            reason: "a -journal or -wal lies beside the destination but its database file is \
                     gone; SQLite would replay it over the new file, so remove it first"
                .into(),
        });
    }
    let name = path_cstring(dest).ok_or_else(|| BackupError::nul_in_path(op, dest))?;
    tracing::debug!(path = %dest.display(), "settling the old file's -wal or -journal");
    let mut attempt = 0;
    loop {
        let in_use = match settle_once(&name, dest, budget) {
            // The old file is not a database: its logs cannot belong to anything worth keeping.
            Err(f) if matches!(f.code, ffi::SQLITE_NOTADB | ffi::SQLITE_CORRUPT) => {
                tracing::debug!(path = %dest.display(), "the old file is no database: its logs are removed");
                for l in &logs {
                    let _ = fs::remove_file(l);
                }
                None
            }
            Err(f) if is_busy(&f) => Some(f),
            Err(failure) => return Err(budget.failed(dest, failure)),
            Ok(()) => None,
        };
        if !present() {
            // SQLite deletes a log without syncing the folder. Were the rename that follows
            // durable and the delete not, a power loss would pair the old file's hot journal
            // with the new file, and the next SQLite would roll old pages into it.
            return crate::fs::sync_dir(&crate::fs::parent_dir(dest))
                .map_err(|e| BackupError::io(op, dest, "fsync directory", e));
        }
        tracing::debug!(path = %dest.display(), attempt, "the old file's log is still in use: waiting");
        if !budget.wait_for(attempt, || dest.to_path_buf()) {
            let reason = in_use.map_or(BusyReason::LogsInUse, BusyReason::Locked);
            return Err(budget.gave_up_because(dest, reason));
        }
        attempt = attempt.saturating_add(1);
    }
}

/// Opens the old file with SQLite for one recovery: lock waits inside it draw on `budget`.
/// Leaving PERSIST mode for DELETE makes SQLite delete the journal if it can take the
/// RESERVED lock, that is if no writer is using it: so a journal that is not hot, left by a
/// TRUNCATE or PERSIST writer (they keep it after every commit), goes as well.
fn settle_once(name: &std::ffi::CStr, dest: &Path, budget: &Budget) -> Result<(), SqliteFailure> {
    let old = OwnedDb::open(name, ffi::SQLITE_OPEN_READWRITE)?;
    let db = old.db();
    let settled = {
        let _waits = BudgetedBusyHandler::install(&db, budget, dest);
        db.exec(
            "PRAGMA journal_mode=PERSIST; PRAGMA journal_mode=DELETE; \
             SELECT count(*) FROM sqlite_schema;",
        )
    };
    old.close()?;
    settled
}
