//! Read-ahead must never outlive a read transaction, including in WAL mode, where SQLite
//! keeps its SHARED file lock between transactions.

use libsqlite3_sys as ffi;

use crate::sqlite::{path_cstring, OwnedDb};

/// A reader through the shim looks up one row: it reads page 1, then the table's root page,
/// which starts a read-ahead of the pages after it. Another connection then deletes half the
/// rows and checkpoints the WAL into the file, rewriting those pages. The reader's next
/// transaction reads page 1 again and then the root page, sequentially, from inside the
/// window read in the first transaction: it must get the page as it is now, not as the
/// buffer held it before the checkpoint.
#[test]
fn wal_reader_sees_pages_a_checkpoint_rewrote() {
    let dir = tempfile::tempdir().unwrap();
    let name = path_cstring(&dir.path().join("wal.db")).unwrap();
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
    let writer = OwnedDb::open(&name, flags).unwrap();
    writer
        .db()
        .exec(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
             INSERT INTO t SELECT randomblob(1000) FROM n;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();

    let reader = OwnedDb::open_with_vfs(&name, ffi::SQLITE_OPEN_READWRITE, super::name()).unwrap();
    let first = "SELECT length(x) FROM t WHERE rowid = 1";
    assert_eq!(reader.db().query_i64(first).unwrap(), 1000);

    writer
        .db()
        .exec("DELETE FROM t WHERE rowid % 2 = 0; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let seen = reader.db().query_i64("SELECT count(*) FROM t");
    assert_eq!(seen.map_err(|f| f.to_string()), Ok(100));
}
