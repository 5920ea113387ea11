//! Cases ported from the backup tests of other SQLite bindings, where they bear on the stepped
//! [`Backup`] handle and on copies of empty databases: APSW (`apsw/tests/__main__.py`,
//! `testBackup`) and CPython (`Lib/test/test_sqlite3/test_backup.py`).

mod common;

use common::{app, filled_pool, scalar};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel::SqliteConnection;
use diesel_sqlite_backup::{Backup, BackupError, BackupExt, BackupOptions, StepResult};

/// CPython's fixture: `foo(key)` holding 3 and 4.
fn cpython_source() -> SqliteConnection {
    let mut cx = SqliteConnection::establish(":memory:").unwrap();
    cx.batch_execute("CREATE TABLE foo (key INTEGER); INSERT INTO foo (key) VALUES (3), (4);")
        .unwrap();
    cx
}

/// CPython's `verify_backup`.
fn assert_foo(conn: &mut SqliteConnection) {
    assert_eq!(scalar(conn, "SELECT min(key) AS n FROM foo"), 3);
    assert_eq!(scalar(conn, "SELECT max(key) AS n FROM foo"), 4);
    assert_eq!(scalar(conn, "SELECT count(*) AS n FROM foo"), 2);
}

/// APSW `testBackup`, `lockerr`: another connection holds `BEGIN EXCLUSIVE` on the
/// destination file, and a backup into a fresh connection to that file starts at once; its
/// step reports busy (APSW: `BusyError`; here `StepResult::Busy`). This crate's `finish`
/// after a busy step is clean (APSW raises the busy once more). After the lock is gone, a
/// new backup copies everything.
#[test]
fn apsw_busy_destination_gives_busy_from_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dest.db");
    let url = file.to_str().unwrap();
    SqliteConnection::establish(url)
        .unwrap()
        .batch_execute("CREATE TABLE old(x); INSERT INTO old VALUES (1);")
        .unwrap();
    let mut src = cpython_source();
    let mut locker = SqliteConnection::establish(url).unwrap();
    locker.batch_execute("BEGIN EXCLUSIVE").unwrap();
    for _ in 0..3 {
        let mut dst = SqliteConnection::establish(url).unwrap();
        let mut backup = Backup::new(&mut src, &mut dst).unwrap();
        assert_eq!(backup.step(-1).unwrap(), StepResult::Busy);
        backup.finish().unwrap();
    }
    locker.batch_execute("ROLLBACK").unwrap();
    let mut dst = SqliteConnection::establish(url).unwrap();
    let mut backup = Backup::new(&mut src, &mut dst).unwrap();
    assert_eq!(backup.step(-1).unwrap(), StepResult::Done);
    backup.finish().unwrap();
    assert_foo(&mut dst);
    drop((dst, locker));
    assert_foo(&mut SqliteConnection::establish(url).unwrap());
}

/// CPython `test_bad_target_in_transaction`: a destination with its own transaction open is
/// refused (CPython: `OperationalError`), here at once and by `Backup::new` itself.
#[test]
fn cpython_bad_target_in_transaction() {
    let mut src = cpython_source();
    let mut bck = SqliteConnection::establish(":memory:").unwrap();
    bck.batch_execute(
        "CREATE TABLE bar (key INTEGER); BEGIN; INSERT INTO bar (key) VALUES (3), (4);",
    )
    .unwrap();
    let err = Backup::new(&mut src, &mut bck).err().expect("refused");
    assert!(matches!(err, BackupError::DestinationInUse { .. }), "{err}");
    let err = src
        .backup_to(&mut bck, BackupOptions::default())
        .unwrap_err();
    assert!(matches!(err, BackupError::DestinationInUse { .. }), "{err}");
}

/// CPython `test_progress_all_pages_at_once_1` and `_2`: a copy in one step (here
/// `pages_per_step(0)`, the crate's "all pages") reports progress once, with nothing left.
#[test]
fn cpython_progress_all_pages_at_once() {
    let mut src = cpython_source();
    let mut bck = SqliteConnection::establish(":memory:").unwrap();
    let mut journal = Vec::new();
    let options = BackupOptions::default()
        .pages_per_step(0)
        .on_progress(|p| journal.push(p.remaining));
    src.backup_to(&mut bck, options).unwrap();
    assert_eq!(journal, [0]);
    assert_foo(&mut bck);
}

/// A database of zero pages (SQLite's `nSrcPage==0` case in `sqlite3_backup_step`): the
/// stepped copy is done in one step and leaves the destination an empty database, in a file
/// that held data and in a pool; `restore_from` of a zero-byte file does the same.
#[test]
fn a_copy_of_zero_pages_leaves_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("full.db");
    filled_pool(5, 10).get().unwrap().save_as(&file).unwrap();
    let mut empty = SqliteConnection::establish(":memory:").unwrap();
    let mut dst = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    let mut backup = Backup::new(&mut empty, &mut dst).unwrap();
    assert_eq!(backup.step(1).unwrap(), StepResult::Done);
    backup.finish().unwrap();
    assert_eq!(
        scalar(&mut dst, "SELECT count(*) AS n FROM sqlite_schema"),
        0
    );
    drop(dst);

    let pool = filled_pool(5, 10);
    let mut conn = pool.get().unwrap();
    let mut backup = Backup::new(&mut empty, &mut conn).unwrap();
    assert_eq!(backup.step(1).unwrap(), StepResult::Done);
    backup.finish().unwrap();
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) AS n FROM sqlite_schema"),
        0
    );
    app::migrate(&mut conn);
    assert_eq!(app::note_count(&mut conn), 0);

    let zero = dir.path().join("zero.db");
    std::fs::write(&zero, b"").unwrap();
    let pool = filled_pool(5, 10);
    pool.get().unwrap().restore_from(&zero).unwrap();
    let mut conn = pool.get().unwrap();
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) AS n FROM sqlite_schema"),
        0
    );
}
