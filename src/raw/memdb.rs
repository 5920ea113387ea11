//! Named in-memory databases on SQLite's `memdb` VFS, shared by the connections of this process.

use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

use super::owned::OwnedDb;
use crate::error::SqliteFailure;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A URI no other database in this process uses. The leading `/` makes memdb share the
/// database between every connection that opens the same name. It names the crate's memdb
/// shim, which keeps WAL version numbers and encoding fields SQLite never writes out of
/// page 1 (see `memdb_vfs`), and plain memdb only if the shim could not be registered.
pub(crate) fn unique_uri(label: &str) -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let vfs = super::memdb_vfs::name().unwrap_or(c"memdb");
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

/// Header bytes 18 and 19: the file format's write and read versions (2 means WAL).
const VERSION_BYTES: std::ops::Range<usize> = 18..20;

/// True when a database image's header marks it as a WAL database, which memdb cannot open.
pub(crate) fn says_wal(image: &[u8]) -> bool {
    image.get(VERSION_BYTES).is_some_and(|v| v.contains(&2))
}

/// Marks a database image as a rollback-journal database, the change `PRAGMA
/// journal_mode=DELETE` makes to a WAL file's header. Exact for an image that holds the
/// committed state (a serialized or backed-up database, WAL frames included).
pub(crate) fn mark_rollback(image: &mut [u8]) {
    if let Some(versions) = image.get_mut(VERSION_BYTES) {
        for byte in versions.iter_mut().filter(|b| **b == 2) {
            *byte = 1;
        }
    }
}

/// Header bytes 56..60: the text encoding, 1 (UTF-8), 2 (UTF-16le) or 3 (UTF-16be), or 0 in a
/// database that never had a schema.
const ENCODING_FIELD: std::ops::Range<usize> = 56..60;

/// What SQLite reads from an encoding field it never writes (4, 8, 256, ...), if the image
/// has one. Opening a main database, SQLite takes the field's low two bits, 0 there meaning
/// UTF-8 (`sqlite3InitOne`), so every reader opens such a file; but a connection that already
/// fixed its encoding compares those bits with its own, and a 4 fails a UTF-8 connection
/// ("attached databases must use the same text encoding as main database").
pub(crate) fn encoding_as_read(image: &[u8]) -> Option<u32> {
    let field = u32::from_be_bytes(image.get(ENCODING_FIELD)?.try_into().ok()?);
    match (field, field & 3) {
        (0..=3, _) => None,
        (_, 0) => Some(1),
        (_, low) => Some(low),
    }
}

/// True when page 1 in `image` says WAL or carries an encoding field SQLite never writes:
/// connections sharing a memdb database fail on either.
pub(crate) fn page1_needs_rewrite(image: &[u8]) -> bool {
    says_wal(image) || encoding_as_read(image).is_some()
}

/// Rewrites what [`page1_needs_rewrite`] finds to what SQLite itself makes of it: the
/// rollback-journal versions, and the encoding SQLite reads from the field.
pub(crate) fn rewrite_page1(image: &mut [u8]) {
    mark_rollback(image);
    if let Some(encoding) = encoding_as_read(image) {
        image[ENCODING_FIELD].copy_from_slice(&encoding.to_be_bytes());
    }
}
