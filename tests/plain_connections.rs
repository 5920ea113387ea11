//! Every `SqliteConnection` supports `BackupExt`, however it was opened: plain
//! `SqliteConnection::establish` and diesel's own r2d2 `ConnectionManager`, both opened before
//! anything of this crate ran. Each test runs in its own process, so nothing of the crate has
//! run there when the connection opens.

mod common;

use std::path::Path;

use common::{app, in_own_process, notes_in_file};
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::BackupExt;

/// Opens `:memory:` with plain diesel: the first thing the test process does.
fn plain() -> SqliteConnection {
    SqliteConnection::establish(":memory:").expect("plain diesel connection")
}

/// A pool of diesel's own manager, with one connection so that its in-memory database stays
/// the same across checkouts.
fn diesel_pool() -> Pool<ConnectionManager<SqliteConnection>> {
    Pool::builder()
        .max_size(1)
        .build(ConnectionManager::new(":memory:"))
        .expect("diesel r2d2 pool")
}

/// A database file holding `notes` notes, written with plain diesel.
fn file_with_notes(path: &Path, notes: usize) {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).expect("open file");
    app::migrate(&mut conn);
    app::fill(&mut conn, "on disk", notes, 10);
}

fn saves(conn: &mut SqliteConnection) {
    app::migrate(conn);
    app::fill(conn, "in memory", 7, 10);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.db");
    conn.save_as(&file).unwrap();
    assert_eq!(notes_in_file(&file), 7);
}

fn restores(conn: &mut SqliteConnection) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.db");
    file_with_notes(&file, 5);
    conn.restore_from(&file).unwrap();
    assert_eq!(app::note_count(conn), 5);
}

fn snapshots(conn: &mut SqliteConnection) {
    app::migrate(conn);
    app::fill(conn, "in memory", 3, 10);
    let snapshot = conn.snapshot().unwrap();
    let mut other = plain();
    other.restore_from_bytes(&snapshot).unwrap();
    assert_eq!(app::note_count(&mut other), 3);
}

#[test]
fn plain_connection_opened_first_saves() {
    if in_own_process("plain_connection_opened_first_saves") {
        saves(&mut plain());
    }
}

#[test]
fn plain_connection_opened_first_restores() {
    if in_own_process("plain_connection_opened_first_restores") {
        restores(&mut plain());
    }
}

#[test]
fn plain_connection_opened_first_snapshots() {
    if in_own_process("plain_connection_opened_first_snapshots") {
        snapshots(&mut plain());
    }
}

#[test]
fn diesel_r2d2_connection_saves() {
    if in_own_process("diesel_r2d2_connection_saves") {
        saves(&mut diesel_pool().get().unwrap());
    }
}

#[test]
fn diesel_r2d2_connection_restores() {
    if in_own_process("diesel_r2d2_connection_restores") {
        restores(&mut diesel_pool().get().unwrap());
    }
}

#[test]
fn diesel_r2d2_connection_snapshots() {
    if in_own_process("diesel_r2d2_connection_snapshots") {
        snapshots(&mut diesel_pool().get().unwrap());
    }
}

/// The deprecated `init` and `establish` still work for one release: `init` does nothing,
/// `establish` is diesel's, and matching on the deprecated `NotBackupCapable` still compiles.
#[test]
#[allow(deprecated)]
fn deprecated_init_and_establish_still_work() {
    diesel_sqlite_backup::init();
    let mut conn = diesel_sqlite_backup::establish(":memory:").unwrap();
    if let Err(diesel_sqlite_backup::BackupError::NotBackupCapable { .. }) = conn.snapshot() {
        panic!("never returned");
    }
    saves(&mut conn);
}
