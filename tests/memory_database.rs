//! `MemoryDatabase`: the shared database as a value. Connections from `connect`, from a
//! `SingletonManager::from_database` pool and from the URI see one database; it lives while
//! any handle or connection lives and is freed after the last; and incremental saves, Opens
//! and autosave work on connections from `connect` as on a pool's.

#[allow(dead_code)]
#[path = "wild/py.rs"]
mod py;
#[allow(dead_code)]
#[path = "wild/scripts.rs"]
mod scripts;
#[allow(dead_code, unused_imports)]
#[path = "incremental/support.rs"]
mod support;

mod common;

use std::time::Duration;

use common::scalar;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{
    Autosave, AutosaveOptions, BackupError, BackupExt, MemoryDatabase, SingletonManager,
};

fn rows(conn: &mut SqliteConnection) -> i64 {
    scalar(conn, "SELECT count(*) AS n FROM t")
}

/// A value to share across threads and pools.
#[test]
fn a_memory_database_is_clone_send_sync() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<MemoryDatabase>();
}

/// A table `t` exists in the database `uri` names (false for a freed, recreated empty one).
fn has_table(uri: &str) -> bool {
    let mut conn = SqliteConnection::establish(uri).unwrap();
    scalar(
        &mut conn,
        "SELECT count(*) AS n FROM sqlite_schema WHERE name = 't'",
    ) == 1
}

/// `connect`, a `from_database` pool, a clone's `connect` and a plain connection on the URI
/// all see one database.
#[test]
fn every_route_sees_one_database() {
    let db = MemoryDatabase::new().unwrap();
    let pool = SingletonManager::pool_builder(3)
        .build(SingletonManager::from_database(db.clone()))
        .unwrap();
    assert_eq!(
        SingletonManager::from_database(db.clone()).database().uri(),
        db.uri()
    );
    let mut a = db.connect().unwrap();
    a.batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    pool.get()
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (2)")
        .unwrap();
    let mut b = db.clone().connect().unwrap();
    b.batch_execute("INSERT INTO t VALUES (3)").unwrap();
    let mut plain = SqliteConnection::establish(db.uri()).unwrap();
    assert_eq!(rows(&mut plain), 3);
    assert_eq!(rows(&mut pool.get().unwrap()), 3);
    assert_eq!(rows(&mut a), 3);
    // Another database is another database.
    let other = MemoryDatabase::new().unwrap();
    assert_ne!(other.uri(), db.uri());
    assert!(!has_table(other.uri()));
}

/// The database lives while any clone, manager or connection lives, measured by its data:
/// dropping the `MemoryDatabase` a connection came from keeps the rows, and so does a clone
/// or a manager with no connection open; once the last goes, the name opens an empty one.
#[test]
fn the_database_lives_while_any_handle_or_connection_lives() {
    // A connection alone.
    let db = MemoryDatabase::new().unwrap();
    let uri = db.uri().to_owned();
    let mut conn = db.connect().unwrap();
    conn.batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
        .unwrap();
    drop(db);
    assert_eq!(rows(&mut conn), 2);
    assert!(has_table(&uri), "another connection still sees the data");
    drop(conn);
    assert!(!has_table(&uri), "freed once the last connection closed");

    // A clone alone, with no connection open.
    let db = MemoryDatabase::new().unwrap();
    let uri = db.uri().to_owned();
    db.connect()
        .unwrap()
        .batch_execute("CREATE TABLE t(x)")
        .unwrap();
    let clone = db.clone();
    drop(db);
    assert!(has_table(&uri), "a clone keeps the database");
    drop(clone);
    assert!(!has_table(&uri), "freed with the last clone");

    // A manager alone (the MemoryDatabase moved into it, no connection open).
    let db = MemoryDatabase::new().unwrap();
    let uri = db.uri().to_owned();
    db.connect()
        .unwrap()
        .batch_execute("CREATE TABLE t(x)")
        .unwrap();
    let manager = SingletonManager::from_database(db);
    assert!(has_table(&uri), "a manager keeps the database");
    drop(manager);
    assert!(!has_table(&uri), "freed with the manager");
}

/// SQLite's own count of the bytes it holds: independent of the allocator and of RSS.
fn sqlite_memory_used() -> i64 {
    // SAFETY: a thread-safe read of SQLite's global memory statistics.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// ~1 MiB in a database reached by every route, then every handle dropped in turn.
fn fill_and_drop_every_route() {
    let db = MemoryDatabase::new().unwrap();
    let pool = SingletonManager::pool_builder(2)
        .build(SingletonManager::from_database(db.clone()))
        .unwrap();
    let mut conn = db.connect().unwrap();
    conn.batch_execute(
        "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1024)
         INSERT INTO t SELECT randomblob(1000) FROM n;",
    )
    .unwrap();
    assert_eq!(rows(&mut pool.get().unwrap()), 1024);
    drop(db);
    drop(pool);
    assert_eq!(rows(&mut conn), 1024, "the connection still holds the data");
    drop(conn);
}

/// The memory is freed when the last clone, manager and connection goes: 100 databases of
/// ~1 MiB each that were not freed would show as ~100 MiB in SQLite's own count.
#[test]
fn the_memory_is_freed_after_the_last_handle() {
    if !common::in_own_process("the_memory_is_freed_after_the_last_handle") {
        return;
    }
    fill_and_drop_every_route(); // one-time set-up before the baseline
    let before = sqlite_memory_used();
    for _ in 0..100 {
        fill_and_drop_every_route();
    }
    // r2d2 opens replacement connections on its scheduler thread, which may still hold a
    // dropped pool's last connection on a loaded machine: wait for it (a hang guard, not a
    // timing assertion), then measure.
    let guard = std::time::Instant::now();
    let mut grown = sqlite_memory_used() - before;
    while grown >= 1 << 20 && guard.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        grown = sqlite_memory_used() - before;
    }
    assert!(
        grown < 1 << 20,
        "SQLite holds {grown} more bytes after 100 dropped databases"
    );
}

/// An incremental save from a connection of `connect` writes only the changed pages, in
/// place, as it does from a pool's connection.
#[test]
fn incremental_saves_work_on_connections_from_connect() {
    if !common::in_own_process("incremental_saves_work_on_connections_from_connect") {
        return;
    }
    const ROWS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let db = MemoryDatabase::new().unwrap();
    let pool = SingletonManager::pool_builder(1)
        .build(SingletonManager::from_database(db.clone()))
        .unwrap();
    support::fill_ledger(&pool, ROWS);
    drop(pool);
    let mut conn = db.connect().unwrap();
    conn.save_as(&path).unwrap();
    let (ino, size) = (
        support::inode(&path),
        std::fs::metadata(&path).unwrap().len(),
    );
    support::transfer(&mut conn, ROWS, 1.0, 3);
    let written =
        support::bytes_written(|| conn.save_as_with(&path, support::incremental()).unwrap());
    assert!(
        written * 20 <= size,
        "{written} bytes written for a {size}-byte file"
    );
    assert_eq!(support::inode(&path), ino, "saved in place");
    assert_eq!(support::python_total(&path), support::TOTAL);
}

/// An Open into a fresh database from `connect` reaches every connection, and its memdb cap
/// (set through a manager of the same database) holds for it.
#[test]
fn opens_work_on_connections_from_connect() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    {
        let source = MemoryDatabase::new().unwrap();
        let mut c = source.connect().unwrap();
        c.batch_execute(
            "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200)
             INSERT INTO t SELECT randomblob(1000) FROM n;",
        )
        .unwrap();
        c.save_as(&file).unwrap();
    }
    let db = MemoryDatabase::new().unwrap();
    let mut reader = db.connect().unwrap();
    db.connect().unwrap().restore_from(&file).unwrap();
    assert_eq!(rows(&mut reader), 200);

    let capped = MemoryDatabase::new().unwrap();
    let _manager = SingletonManager::from_database(capped.clone()).size_limit(Some(48 * 1024));
    let err = capped.connect().unwrap().restore_from(&file).unwrap_err();
    let failure = err.sqlite_failure().expect("an SQLite failure");
    assert_eq!(failure.code, libsqlite3_sys::SQLITE_FULL, "{err}");
}

/// `Autosave::start_with_database` follows commits made on connections from `connect` and
/// from a pool of the same database.
#[test]
fn autosave_follows_a_memory_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auto.db");
    let db = MemoryDatabase::new().unwrap();
    let options = AutosaveOptions::default().every(Duration::from_secs(3600));
    let autosave = Autosave::start_with_database(&db, &path, options).unwrap();
    db.connect()
        .unwrap()
        .batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    autosave.save_now().unwrap();
    assert_eq!(
        rows(&mut SqliteConnection::establish(path.to_str().unwrap()).unwrap()),
        1
    );
    let pool = SingletonManager::pool_builder(2)
        .build(SingletonManager::from_database(db.clone()))
        .unwrap();
    pool.get()
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (2)")
        .unwrap();
    drop(db);
    drop(pool);
    autosave.stop().unwrap();
    assert_eq!(
        rows(&mut SqliteConnection::establish(path.to_str().unwrap()).unwrap()),
        2
    );
}

/// `pool_builder` carries the crate's set-up: the checkout timeout and a reaper-less pool
/// of the size asked for.
#[test]
fn pool_builder_carries_the_set_up() {
    let pool = SingletonManager::pool_builder(3)
        .build(SingletonManager::new())
        .unwrap();
    assert_eq!(pool.max_size(), 3);
    assert_eq!(
        pool.connection_timeout(),
        diesel_sqlite_backup::DEFAULT_CHECKOUT_TIMEOUT
    );
    assert_eq!(pool.idle_timeout(), None);
    assert_eq!(pool.max_lifetime(), None);
}

/// A database SQLite cannot open (no memory under a hard heap limit) fails as what it is,
/// opening the database, naming its URI: not as a template.
#[test]
fn a_database_that_cannot_open_says_so() {
    if !common::in_own_process("a_database_that_cannot_open_says_so") {
        return;
    }
    drop(MemoryDatabase::new().unwrap()); // one-time set-up before the limit
    let used = sqlite_memory_used();
    // SAFETY: sets a process-wide SQLite limit; this test runs alone in its own process.
    let old = unsafe { libsqlite3_sys::sqlite3_hard_heap_limit64(used + 1024) };
    let result = MemoryDatabase::new();
    // SAFETY: as above; restores the limit before anything else runs.
    unsafe { libsqlite3_sys::sqlite3_hard_heap_limit64(old) };
    let err = result.expect_err("opening a database with 1 KiB of heap left");
    let BackupError::Sqlite { op, path, failure } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*op, diesel_sqlite_backup::Operation::Connect, "{err}");
    assert!(path.to_string_lossy().starts_with("file:"), "{err}");
    assert_eq!(failure.code, libsqlite3_sys::SQLITE_NOMEM, "{err}");
    assert!(err.to_string().starts_with("connect file:"), "{err}");
}
