//! `restore_from` into a fresh (empty) pool, which loads the file's bytes without the
//! page-by-page backup: the result equals the source for every pooled connection, and a
//! failure part-way leaves the pool empty and usable.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{integrity_of, scalar, Pool};
use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupError, BackupExt, BackupOptions, SingletonManager};

/// A file Python's SQLite wrote with `page_size`, in `journal` mode; returns it and what
/// Python reads from it: row count, total body length, largest id.
fn python_file(dir: &Path, page_size: u32, journal: &str) -> (PathBuf, (i64, i64, i64)) {
    let path = dir.join(format!("py-{page_size}-{journal}.db"));
    let script = format!(
        "import sqlite3\n\
         c = sqlite3.connect({path:?}, isolation_level=None)\n\
         c.execute('PRAGMA page_size={page_size}')\n\
         c.execute('PRAGMA journal_mode={journal}')\n\
         c.execute('PRAGMA wal_autocheckpoint=0')\n\
         c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)')\n\
         c.execute('CREATE INDEX t_body ON t(body)')\n\
         for i in range(700):\n\
         \x20   c.execute('INSERT INTO t(body) VALUES (?)', ('row %d ' % i * (i % 40 + 1),))\n\
         c.execute('DELETE FROM t WHERE id % 7 = 0')\n\
         print(*c.execute('SELECT count(*), sum(length(body)), max(id) FROM t').fetchone())\n\
         import os\n\
         os._exit(0)\n",
        path = path.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<i64> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    (path, (n[0], n[1], n[2]))
}

fn pool_of(max: u32, manager: SingletonManager) -> Pool {
    r2d2::Pool::builder().max_size(max).build(manager).unwrap()
}

fn summary(conn: &mut diesel::SqliteConnection) -> (i64, i64, i64) {
    (
        scalar(conn, "SELECT count(*) AS n FROM t"),
        scalar(conn, "SELECT sum(length(body)) AS n FROM t"),
        scalar(conn, "SELECT max(id) AS n FROM t"),
    )
}

fn assert_empty_and_usable(pool: &Pool) {
    let mut c = pool.get().unwrap();
    assert_eq!(scalar(&mut c, "SELECT count(*) AS n FROM sqlite_schema"), 0);
    c.batch_execute("CREATE TABLE after(x); INSERT INTO after VALUES (1);")
        .unwrap();
    assert_eq!(scalar(&mut c, "SELECT count(*) AS n FROM after"), 1);
    assert_eq!(integrity_of(&mut c), "ok");
}

/// Odd page sizes, in rollback and WAL mode (whose un-checkpointed rows only the backup
/// route can see), equal what Python reads, for a connection that saw the empty database.
#[test]
fn python_files_with_odd_page_sizes_load_into_a_fresh_pool() {
    let dir = tempfile::tempdir().unwrap();
    for (page_size, journal) in [(512, "delete"), (65536, "delete"), (2048, "wal")] {
        let (file, expected) = python_file(dir.path(), page_size, journal);
        let pool = pool_of(2, SingletonManager::new());
        let (mut a, mut b) = (pool.get().unwrap(), pool.get().unwrap());
        assert_eq!(scalar(&mut b, "SELECT count(*) AS n FROM sqlite_schema"), 0);
        a.restore_from(&file).unwrap();
        for c in [&mut a, &mut b] {
            assert_eq!(summary(c), expected, "{page_size} {journal}");
            assert_eq!(integrity_of(c), "ok");
            assert_eq!(
                scalar(c, "SELECT page_size AS n FROM pragma_page_size()"),
                i64::from(page_size)
            );
        }
        b.batch_execute("INSERT INTO t(body) VALUES ('after the load')")
            .unwrap();
        assert_eq!(summary(&mut a).0, expected.0 + 1);
    }
}

/// memdb's size limit stops the load part-way: the error is SQLite's, and the pool is
/// empty for every connection and takes new tables.
#[test]
fn a_load_past_the_size_limit_leaves_the_pool_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = python_file(dir.path(), 1024, "delete");
    let pool = pool_of(2, SingletonManager::new().size_limit(Some(48 * 1024)));
    let err = pool.get().unwrap().restore_from(&file).unwrap_err();
    let failure = err.sqlite_failure().expect("an SQLite failure");
    assert_eq!(failure.code, libsqlite3_sys::SQLITE_FULL, "{err}");
    assert_empty_and_usable(&pool);
}

/// A progress callback that panics or cancels between steps leaves the pool empty.
#[test]
fn a_panic_or_cancel_mid_load_leaves_the_pool_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (file, expected) = python_file(dir.path(), 4096, "delete");
    let pool = memory_pool().unwrap();
    let panicked = panic::catch_unwind(AssertUnwindSafe(|| {
        let opts = BackupOptions::default()
            .pages_per_step(2)
            .on_progress(|_| panic!("progress callback fails"));
        pool.get().unwrap().restore_from_with(&file, opts)
    }));
    assert!(panicked.is_err());
    assert_empty_and_usable(&pool);

    let pool = memory_pool().unwrap();
    let token = diesel_sqlite_backup::CancelToken::new();
    let opts = BackupOptions::default()
        .pages_per_step(3)
        .cancel_token(&token)
        .on_progress(|_| token.cancel());
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(&file, opts)
        .unwrap_err();
    assert!(matches!(err, BackupError::Cancelled { .. }), "{err}");
    assert_empty_and_usable(&pool);

    let pool = memory_pool().unwrap();
    pool.get().unwrap().restore_from(&file).unwrap();
    assert_eq!(summary(&mut pool.get().unwrap()), expected);
}

/// Another connection's read transaction keeps the load out (it waits, within the budget,
/// like any restore); once it ends the load goes through.
#[test]
fn a_reader_of_the_empty_pool_makes_the_load_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (file, expected) = python_file(dir.path(), 4096, "delete");
    let pool = pool_of(2, SingletonManager::new());
    let (mut a, mut b) = (pool.get().unwrap(), pool.get().unwrap());
    b.batch_execute("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .unwrap();
    let opts = BackupOptions::default().timeout(Duration::from_millis(150));
    let err = a.restore_from_with(&file, opts).unwrap_err();
    assert!(matches!(err, BackupError::Busy { .. }), "{err}");
    assert_eq!(scalar(&mut b, "SELECT count(*) AS n FROM sqlite_schema"), 0);
    b.batch_execute("COMMIT").unwrap();
    a.restore_from(&file).unwrap();
    assert_eq!(summary(&mut b), expected);
}
