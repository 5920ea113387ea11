//! Named in-memory databases on SQLite's `memdb` VFS, shared by the connections of this process,
//! the crate's shim over it ([`vfs`]), and the write record the shim feeds ([`record`], [`opens`]).

pub(crate) mod file;
pub(crate) mod opens;
pub(crate) mod record;
pub(crate) mod vfs;

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libsqlite3_sys as ffi;

use crate::error::SqliteFailure;
use crate::sqlite::{DbRef, OwnedDb, Storage};
use record::Tracker;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A URI no other database in this process uses. The leading `/` makes memdb share the
/// database between every connection that opens the same name. It names the crate's memdb
/// shim, which keeps WAL version numbers and encoding fields SQLite never writes out of
/// page 1 (see `vfs`), and plain memdb only if the shim could not be registered.
pub(crate) fn unique_uri(label: &str) -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let vfs = vfs::name().unwrap_or(c"memdb");
    format!(
        "file:/diesel-sqlite-backup-{}-{label}-{id}?vfs={}",
        std::process::id(),
        vfs.to_string_lossy()
    )
}

/// Opens a connection that keeps the named database alive (memdb frees it when its last
/// connection closes) and lifts memdb's size cap to `size_limit` bytes (`None`: no cap).
pub(crate) fn open_keeper(uri: &str, size_limit: Option<u64>) -> Result<OwnedDb, SqliteFailure> {
    let uri = std::ffi::CString::new(uri).expect("generated URIs hold no NUL");
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_URI;
    let keeper = OwnedDb::open(&uri, flags)?;
    let limit = size_limit.map_or(i64::MAX, |l| l.min(i64::MAX as u64) as i64);
    keeper.db().set_memdb_size_limit(c"main", limit);
    Ok(keeper)
}

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
    unsafe { vfs::tracker_of(file).cloned() }
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
            unsafe { vfs::set_untracked(file, on) };
        }
    }
}

impl Drop for Untracked<'_, '_> {
    fn drop(&mut self) {
        Self::set(self.db, self.schema, false);
    }
}
