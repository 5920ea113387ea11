//! Incremental saves: write only the pages that changed since the file was last written by
//! (or loaded into) this database, in place, without ever tearing the file.
//!
//! # Knowing what changed
//! Every pool database lives in the crate's memdb shim (`raw::memdb_vfs`), whose `xWrite`
//! and `xTruncate` run for every write of every connection of the pool: commits, cache
//! spills before a commit, rollbacks restoring pages, `VACUUM`'s copy-back, backups into it.
//! So a [`tracker::Tracker`] beside each database (shared by name by all its file objects)
//! sees every byte that reaches the pages. It keeps a bitmap of pages written since its
//! *baseline*: a file this database equalled page for page. It never guesses: a write that
//! is not exactly one aligned page, a page size other than the baseline's, a truncation to a
//! partial page, all make the record "unknown", and the next save full. A write past the end
//! marks the gap memdb zero-fills too. Writes under rollback count as changes (conservative).
//!
//! Baselines come from a full save (the record is cleared when the save starts, so writes
//! during its stepped copy are recorded again; the new file's identity is taken from the
//! temporary file before the rename, or, in place, under a lock after the commit) and from `restore_from` of a rollback-mode file copied
//! page for page (the restoring connection's own writes are marked untracked while it holds
//! the write transaction; any conversion, a WAL source, a failure: no baseline). An epoch
//! counter makes sure that only the operation that last cleared the record installs its
//! baseline, and an incremental save *takes* the baseline, so two saves can never both use
//! it with half the record each.
//!
//! # Writing in place without tearing
//! This is what SQLite itself does in `journal_mode=DELETE`, so every SQLite reader already
//! knows how to recover from any crash of ours:
//! 1. the changed pages (and page 1) are read from memory under one read transaction, the
//!    same consistent state a full save copies;
//! 2. the file is opened with SQLite and locked with `BEGIN EXCLUSIVE` (a hot journal left by
//!    a crash is rolled back right there); under that lock SQLite's own view of the file must
//!    show the baseline's change counter, size and page size, rollback mode, and `stat` the
//!    same device, inode, size and modification time; otherwise the save is a full one;
//! 3. a rollback journal in SQLite's documented format ([`journal`]) gets the original of
//!    every page about to change (and of every page a shrink cuts), streamed to the file in
//!    chunks (never a second whole copy in memory), and is fsynced, with its directory;
//! 4. the new pages go through the connection's own `sqlite3_file` (page 1 with the change
//!    counter bumped, so every reader's cache is invalidated), then truncate and `xSync`;
//! 5. deleting the journal is the commit point.
//!
//! The changed pages are copied out of memory so that the source's read lock (which pool
//! writers wait for) is held only for that copy, into a buffer whose memory is faulted in
//! before the lock is taken. Above 32 MiB of them, the full save is used:
//! in incremental mode it is in place as well ([`full`]), streaming through SQLite's pager.
//!
//! A crash before 5 leaves the old file with a hot journal, which any SQLite opening it rolls
//! back; after 5, the new file. Readers never see a half-written state: they need SHARED,
//! which the EXCLUSIVE lock keeps out. No descriptor of ours is ever opened on the database
//! file itself (closing it would drop this process's POSIX locks); only the journal, which
//! SQLite never locks, is written with `std::fs`.
//!
//! Full saves in this mode never rename over an existing rollback-mode database ([`full`]
//! says why): renames and in-place journals must not mix.
//!
//! Why not a reflink copy: it needs a filesystem that has one, still renames (breaking other
//! processes' open handles to the document), and leaves the old route everywhere else.

pub(crate) mod full;
pub(crate) mod journal;
pub(crate) mod opens;
mod pages;
pub(crate) mod replaced;
pub(crate) mod save;
pub(crate) mod tracker;

use std::ffi::CStr;
use std::sync::Arc;

use crate::raw::{memdb_vfs, DbRef, Storage};
use tracker::Tracker;

/// The write record of `schema` of `db` for saves, which read pages through `main`: only a
/// pool database opened as a connection's `main` has one.
pub(crate) fn tracker_of(db: &DbRef<'_>, schema: &CStr) -> Option<Arc<Tracker>> {
    if schema != c"main" {
        return None;
    }
    record_of(db, schema)
}

/// The write record of the pool database that `schema` of `db` is, under whatever name it is
/// attached: an Open into it must reach that database's autosave however it arrives.
pub(crate) fn record_of(db: &DbRef<'_>, schema: &CStr) -> Option<Arc<Tracker>> {
    if db.storage(schema) != Storage::PatchedMemdb {
        return None;
    }
    let file = db.file_object(schema)?;
    // SAFETY: `file` is the connection's open file object of `schema`, alive while `db` is
    // borrowed; tracker_of only reads our region when the object carries our table.
    unsafe { memdb_vfs::tracker_of(file).cloned() }
}

/// While alive, writes through `schema` of `db` are not recorded: they are a restore making
/// the database equal to the file that becomes the baseline.
pub(crate) struct Untracked<'d, 'a> {
    db: &'d DbRef<'a>,
    schema: &'d CStr,
}

impl<'d, 'a> Untracked<'d, 'a> {
    pub(crate) fn new(db: &'d DbRef<'a>, schema: &'d CStr) -> Self {
        Self::set(db, schema, true);
        Untracked { db, schema }
    }

    fn set(db: &DbRef<'_>, schema: &CStr, on: bool) {
        if let Some(file) = db.file_object(schema) {
            // SAFETY: the connection's open file object of `schema`; only ours is touched.
            unsafe { memdb_vfs::set_untracked(file, on) };
        }
    }
}

impl Drop for Untracked<'_, '_> {
    fn drop(&mut self) {
        Self::set(self.db, self.schema, false);
    }
}
