//! The full save of incremental mode: into an existing rollback-journal database, in place,
//! through SQLite's own backup, so the file keeps its inode.
//!
//! # Why not rename
//! A connection opened on a file before it was replaced by a rename keeps the old inode.
//! SQLite pairs a file with its journal by name, and checks the RESERVED lock on its own
//! inode only, so such a connection takes the next in-place save's `-journal` for a hot
//! journal of *its* file: it replays it into the old inode and deletes it, and a crash of
//! that save then leaves the real file torn. In incremental mode every later save is in
//! place, so a rename must never happen under a database someone may hold open: an existing
//! rollback-mode database is overwritten by `sqlite3_backup` into a connection on the file
//! itself, exactly as any SQLite writer would (its own journal, locks and syncs). Only a
//! missing file, a WAL file or something that is not a database is still replaced by rename.
//!
//! # The baseline without a race
//! The backup commits and unlocks by itself, so the file's header is read afterwards, under a
//! new RESERVED lock. SQLite bumps the change counter by exactly one per transaction (to the
//! value it read when it locked the file), so the file is untouched since our commit only if
//! the counter is the one read before the backup plus one, and `stat` shows the inode the
//! save started on. Any other writer in between makes a larger counter: no baseline, and the
//! next save is full again.

use std::ffi::CStr;
use std::path::Path;

use libsqlite3_sys as ffi;

use crate::copy::{engine, BackupOptions};
use crate::error::{BackupError, SqliteFailure};
use crate::format::header;
use crate::fs::FileId;
use crate::sqlite::budget::{Budget, BudgetedBusyHandler};
use crate::sqlite::memdb::record::{rebase, Baseline, Tracker};
use crate::sqlite::{path_cstring, DbRef, OwnedDb};

/// The destination's settings while the backup writes it. Each spill of a full cache syncs
/// the journal, so a larger cache means fewer syncs; 16 MiB keeps memory bounded.
///
/// EXTRA, not FULL: a commit that shrinks the file truncates it *after* deleting the journal
/// (`pager_end_transaction` in `pager.c`), and only EXTRA fsyncs the folder after that
/// delete. At FULL a power loss can keep the truncation and lose the delete: the journal
/// comes back hot, holding only the pages that were overwritten, and rolling it back
/// leaves the cut pages as zeros (found by `tests/power_loss.rs`).
const DEST_PRAGMAS: &str = "PRAGMA cache_size=-16384; PRAGMA synchronous=EXTRA;";

/// What the file at the path is, as SQLite sees it, before the save.
struct Existing {
    id: FileId,
    counter: u32,
}

/// Saves `schema` of `src` over the existing database at `dest` in place, and installs the
/// new baseline in `tracker` (if any). `Ok(false)`: the file is not an existing, writable,
/// rollback-mode database (or SQLite cannot tell), so the caller replaces it by rename.
pub(crate) fn save_over_existing(
    src: &DbRef<'_>,
    schema: &CStr,
    tracker: Option<&Tracker>,
    dest: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<bool, BackupError> {
    let Some(id) = FileId::of(dest) else {
        // missing, a directory, a device: the rename route decides
        return Ok(rename_because("no regular file at the path"));
    };
    let Some(name) = path_cstring(dest) else {
        return Ok(rename_because("the path has a NUL"));
    };
    let Ok(file) = OwnedDb::open(&name, ffi::SQLITE_OPEN_READWRITE) else {
        return Ok(rename_because("SQLite cannot open the file read-write"));
    };
    let db = file.db();
    let saved = {
        let _dest_waits = BudgetedBusyHandler::install(&db, budget, dest);
        match inspect(&db, id, dest, budget)? {
            None => Ok(false),
            Some(existing) => rebase(tracker, || {
                let copied = copy(src, schema, &db, dest, opts, budget);
                let baseline = copied
                    .as_ref()
                    .ok()
                    .and_then(|()| read_baseline(&db, &existing, dest));
                (copied.map(|()| true), baseline)
            }),
        }
    };
    file.close().map_err(|f| budget.failed(dest, f))?;
    if saved.as_ref().is_ok_and(|&done| done) {
        // SQLite does not sync the folder after deleting its journal: without this, a power
        // cut could bring the journal back and with it the previous version.
        let _ = crate::fs::sync_dir(&crate::fs::parent_dir(dest));
    }
    saved
}

/// Under a read transaction (which rolls back any hot journal first): is this a writable
/// rollback-mode database, still at `id`? Returns its change counter.
fn inspect(
    db: &DbRef<'_>,
    id: FileId,
    dest: &Path,
    budget: &Budget,
) -> Result<Option<Existing>, BackupError> {
    if db.is_readonly(c"main") {
        rename_because("the file is read-only");
        return Ok(None);
    }
    let looked = db
        .exec("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .and_then(|()| db.file_header(c"main"));
    let _ = db.exec("COMMIT");
    let (header, len) = match looked {
        Ok(found) => found,
        Err(f) if crate::sqlite::budget::is_busy(&f) => return Err(budget.gave_up(dest, f)),
        Err(f) if is_not_a_database(&f) => {
            rename_because("the file is not a database");
            return Ok(None);
        }
        Err(f) => return Err(budget.failed(dest, f)),
    };
    let rollback_mode = len == 0 || header::is_rollback_mode(&header);
    let same_file = FileId::of(dest).is_some_and(|now| (now.dev, now.ino) == (id.dev, id.ino));
    if !rollback_mode {
        rename_because("the file is in WAL mode");
    } else if !same_file {
        rename_because("the file was replaced meanwhile");
    }
    Ok((rollback_mode && same_file).then(|| Existing {
        id,
        counter: header::change_counter(&header),
    }))
}

/// Why the full save replaces the file by rename after all: on the save's span and as an
/// event. Returns `false`, the answer "not in place".
fn rename_because(reason: &'static str) -> bool {
    crate::observe::record("rename_reason", reason);
    tracing::debug!(
        rename_reason = reason,
        "the full save replaces the file by rename"
    );
    false
}

fn is_not_a_database(f: &SqliteFailure) -> bool {
    matches!(f.code, ffi::SQLITE_NOTADB | ffi::SQLITE_CORRUPT)
}

/// The stepped backup into the file: one destination transaction, SQLite's own journal.
fn copy(
    src: &DbRef<'_>,
    schema: &CStr,
    dst: &DbRef<'_>,
    dest: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<(), BackupError> {
    let sqlite = BackupError::sqlite_at(budget.op(), dest);
    dst.exec(DEST_PRAGMAS).map_err(sqlite)?;
    lock_file(dst).map_err(|f| budget.failed(dest, f))?;
    let _src_waits = BudgetedBusyHandler::install(src, budget, &src.display_path(schema));
    engine::copy_pages(
        (dst, c"main"),
        (src, schema),
        opts,
        budget,
        dest,
        sqlite,
        || {},
    )
}

/// Takes the file's EXCLUSIVE lock (waiting in the busy handler with PENDING held, which turns
/// new readers away) and keeps it for the backup, which releases it when it commits.
///
/// Lock order: a restore from this file into the pool holds the file's read lock while it
/// waits for the pool database's write lock. `sqlite3_backup_step` locks its source (the pool
/// database, read) before its destination: left to lock the file itself, the backup would
/// wait for that restore while holding the read lock the restore waits for, and one of the
/// two would wait out its whole budget. Locked here first, the file comes before the pool
/// database, in the restore's order.
fn lock_file(db: &DbRef<'_>) -> Result<(), SqliteFailure> {
    // In EXCLUSIVE locking mode a connection keeps its lock after COMMIT; back in NORMAL
    // mode, it lets go at the end of its next transaction (the backup's).
    let locked = db.exec("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;");
    let normal = db.exec("PRAGMA locking_mode=NORMAL");
    locked.and(normal)
}

/// The new baseline, if the file provably still is what the backup committed.
fn read_baseline(db: &DbRef<'_>, before: &Existing, dest: &Path) -> Option<Baseline> {
    // RESERVED keeps every other writer out while the header and `stat` are read.
    let read = db
        .exec("BEGIN IMMEDIATE; SELECT count(*) FROM sqlite_schema;")
        .and_then(|()| db.file_header(c"main"));
    let id = FileId::of(dest);
    let _ = db.exec("COMMIT");
    let (header, len) = read.ok()?;
    let id = id.filter(|now| (now.dev, now.ino) == (before.id.dev, before.id.ino))?;
    // Untouched: the backup's commit is the only change since the file was inspected.
    Baseline::of(dest, id, &header, len).filter(|b| b.counter == before.counter.wrapping_add(1))
}
