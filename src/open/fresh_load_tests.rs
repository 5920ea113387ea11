//! The fast route into an empty database leaves exactly the bytes the backup route leaves,
//! and steps aside whenever one of its conditions does not hold.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use libsqlite3_sys as ffi;

use super::try_load;
use crate::copy::checks::begin_read;
use crate::copy::convert::{self, Plan};
use crate::copy::BackupOptions;
use crate::error::Operation;
use crate::sqlite::{batch_vfs, memdb, readonly_uri, OwnedDb};

/// A rollback-mode file of `page_size`-byte pages holding a table and an index.
fn source_file(dir: &Path, page_size: u32, rows: u32) -> PathBuf {
    let path = dir.join(format!("source-{page_size}.db"));
    let db = OwnedDb::open(
        &CString::new(path.to_str().unwrap()).unwrap(),
        ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
    )
    .unwrap();
    db.db()
        .exec(&format!(
            "PRAGMA page_size={page_size}; PRAGMA user_version=7;
             CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX t_body ON t(body);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t(body) SELECT hex(randomblob(300)) FROM n;"
        ))
        .unwrap();
    path
}

/// The source opened as `restore_from` opens it: read-only, batched, in a read transaction.
fn open_source(path: &Path) -> OwnedDb {
    let uri = readonly_uri(&std::fs::canonicalize(path).unwrap()).unwrap();
    let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_URI;
    let src = OwnedDb::open_with_vfs(&uri, flags, batch_vfs::name()).unwrap();
    let budget = BackupOptions::default().budget(Operation::Restore);
    begin_read(&src.db(), path, &budget).unwrap();
    src
}

/// A fresh pool database: a keeper and a second connection to it.
fn fresh_pool() -> (OwnedDb, OwnedDb) {
    let uri = memdb::unique_uri("fresh-load-test");
    (
        memdb::open_keeper(&uri, None).unwrap(),
        memdb::open_keeper(&uri, None).unwrap(),
    )
}

/// `try_load` of the source `src` (main) opened from `path` into `dest` (main).
fn try_into(
    src: &OwnedDb,
    dest: &OwnedDb,
    path: &Path,
    opts: &mut BackupOptions<'_>,
) -> Result<Option<Plan>, crate::BackupError> {
    let budget = opts.budget(Operation::Restore);
    try_load(&src.db(), &dest.db(), c"main", path, path, opts, &budget)
}

/// Loads `path` into a fresh database by the fast route (`fast`) or the backup route.
fn load(path: &Path, fast: bool) -> (Option<Plan>, Vec<u8>, (OwnedDb, OwnedDb)) {
    let (keeper, dest) = fresh_pool();
    let src = open_source(path);
    let mut opts = BackupOptions::default().pages_per_step(7);
    let budget = opts.budget(Operation::Restore);
    let (s, d) = (src.db(), dest.db());
    let plan = if fast {
        try_load(&s, &d, c"main", path, path, &mut opts, &budget).unwrap()
    } else {
        let from = convert::End {
            db: &s,
            schema: c"main",
            path,
        };
        let to = convert::End {
            db: &d,
            schema: c"main",
            path,
        };
        Some(convert::copy(from, to, true, path, &mut opts, &budget).unwrap())
    };
    drop(src);
    let image = dest.db().serialize_main().unwrap();
    (plan, image, (keeper, dest))
}

#[test]
fn the_fast_route_leaves_the_bytes_the_backup_leaves() {
    let dir = tempfile::tempdir().unwrap();
    for page_size in [512, 4096, 65536] {
        let path = source_file(dir.path(), page_size, 300);
        let (plan, fast, (keeper, _dest)) = load(&path, true);
        assert_eq!(plan, Some(Plan::Direct), "page size {page_size}");
        let (_, slow, _) = load(&path, false);
        assert_eq!(fast.len(), slow.len(), "page size {page_size}");
        assert!(fast == slow, "page size {page_size}: the images differ");
        // Every other connection of the pool sees the loaded database.
        let other = keeper.db();
        assert_eq!(other.query_i64("SELECT count(*) FROM t").unwrap(), 300);
        assert_eq!(other.query_i64("PRAGMA user_version").unwrap(), 7);
        assert_eq!(
            other.query_column("PRAGMA integrity_check").unwrap(),
            vec!["ok".to_owned()]
        );
        other.exec("INSERT INTO t(body) VALUES ('after')").unwrap();
    }
}

#[test]
fn a_database_that_holds_pages_or_a_lock_is_left_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = source_file(dir.path(), 4096, 20);
    let mut opts = BackupOptions::default();

    let (_keeper, dest) = fresh_pool();
    dest.db().exec("CREATE TABLE kept(x)").unwrap();
    let src = open_source(&path);
    let taken = try_into(&src, &dest, &path, &mut opts);
    assert_eq!(taken.unwrap(), None, "a database with pages is not fresh");
    assert_eq!(dest.db().query_i64("SELECT count(*) FROM kept").unwrap(), 0);

    let (reader, dest) = fresh_pool();
    reader
        .db()
        .exec("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .unwrap();
    let taken = try_into(&src, &dest, &path, &mut opts);
    assert_eq!(
        taken.unwrap(),
        None,
        "a reader's lock makes it wait for the backup"
    );
    reader.db().exec("COMMIT").unwrap();
    assert_eq!(dest.db().file_len(c"main").unwrap(), 0);

    // A name without a leading `/` is a private database: opening it again by name would
    // reach another one.
    let uri = format!(
        "file:private-{}?vfs={}",
        std::process::id(),
        memdb::vfs::NAME.to_str().unwrap()
    );
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_URI;
    let private = OwnedDb::open(&CString::new(uri).unwrap(), flags).unwrap();
    assert_eq!(
        private.db().storage(c"main"),
        crate::sqlite::Storage::PatchedMemdb
    );
    let taken = try_into(&src, &private, &path, &mut opts);
    assert_eq!(
        taken.unwrap(),
        None,
        "a private database is left to the backup"
    );
}

#[test]
fn a_cancelled_load_leaves_the_database_empty_and_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = source_file(dir.path(), 1024, 200);
    let (keeper, dest) = fresh_pool();
    let src = open_source(&path);
    let token = crate::CancelToken::new();
    let mut steps = 0;
    let mut opts = BackupOptions::default()
        .pages_per_step(5)
        .cancel_token(&token)
        .on_progress(|_| {
            steps += 1;
            token.cancel();
        });
    let err = try_into(&src, &dest, &path, &mut opts);
    assert!(matches!(err, Err(crate::BackupError::Cancelled { .. })));
    drop(opts);
    assert_eq!(steps, 1);
    assert_eq!(dest.db().file_len(c"main").unwrap(), 0);
    assert_eq!(
        keeper
            .db()
            .query_i64("SELECT count(*) FROM sqlite_schema")
            .unwrap(),
        0
    );
    dest.db()
        .exec("CREATE TABLE after(x); INSERT INTO after VALUES (1);")
        .unwrap();
    assert_eq!(
        keeper.db().query_i64("SELECT count(*) FROM after").unwrap(),
        1
    );
}
