//! Reaching the `sqlite3*` behind a Diesel `SqliteConnection`: only through Diesel's documented
//! `SqliteConnection::with_raw_connection`, so every connection has it, however it was opened.

use std::ptr::NonNull;

use diesel::SqliteConnection;

use super::db::DbRef;

/// The raw handle of `conn`, borrowed for as long as `conn` is. Runs no statement, so it never
/// waits for a lock.
pub(crate) fn raw_handle(conn: &mut SqliteConnection) -> DbRef<'_> {
    // SAFETY: the closure only returns the pointer. Diesel's conditions for using it hold for
    // as long as the returned DbRef lives, which is as long as the `&mut` borrow of `conn`,
    // so Diesel cannot use, move or close the connection meanwhile (its whole use is as if
    // inside the callback):
    // - it is not closed: only `OwnedDb` ever closes a handle, never a DbRef;
    // - one thread: DbRef is neither Send nor Sync;
    // - Diesel's transaction state holds: the crate opens a transaction on a borrowed
    //   connection only in autocommit mode and ends it before the call returns, and never
    //   ends one it did not open;
    // - Diesel's cached statements are left alone: the crate finalizes and resets only the
    //   statements it prepared itself.
    let db = unsafe { conn.with_raw_connection(|db| db) };
    let db = NonNull::new(db).expect("Diesel's connection handle is never null");
    // SAFETY: an open connection (see above), used only on this thread while `conn` is
    // mutably borrowed.
    unsafe { DbRef::from_raw(db) }
}

/// Formerly made connections opened afterwards backup-capable. Every `SqliteConnection` is now,
/// however and whenever it was opened, so this does nothing.
#[deprecated(
    note = "does nothing: every SqliteConnection supports BackupExt (Diesel 2.4's \
            with_raw_connection); remove the call"
)]
pub fn init() {}
