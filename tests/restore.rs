//! `restore_from`: Open never loses the current data, never creates the file it reads, and
//! copes with page-size differences.

mod common;

use std::fs;
use std::path::Path;

use common::{app, filled_pool, scalar, Pool};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{memory_pool, BackupError, BackupExt, BackupOptions};

/// A pool whose data must survive every failed restore: 7 notes.
fn precious() -> Pool {
    filled_pool(7, 10)
}

fn assert_untouched(pool: &Pool) {
    assert_eq!(
        app::note_count(&mut pool.get().unwrap()),
        7,
        "current data was damaged"
    );
}

/// Restoring `file` is refused as an invalid database and the current data stays.
fn assert_refused(pool: &Pool, file: &Path, what: &str) {
    let err = pool.get().unwrap().restore_from(file).unwrap_err();
    assert!(
        matches!(err, BackupError::InvalidDatabase { .. }),
        "{what}: {err}"
    );
    assert_untouched(pool);
}

/// A valid database file with `notes` notes.
fn saved_file(dir: &Path, name: &str, notes: usize) -> std::path::PathBuf {
    let file = dir.join(name);
    filled_pool(notes, 100)
        .get()
        .unwrap()
        .save_as(&file)
        .unwrap();
    file
}

#[test]
fn restore_replaces_the_data_for_every_pooled_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "doc.db", 300);
    let pool = r2d2::Pool::builder()
        .max_size(3)
        .build(diesel_sqlite_backup::SingletonManager::new())
        .unwrap();
    let (mut a, mut b, mut c) = (
        pool.get().unwrap(),
        pool.get().unwrap(),
        pool.get().unwrap(),
    );
    app::migrate(&mut a);
    app::fill(&mut a, "old", 3, 1);
    assert_eq!(app::note_count(&mut b), 3);
    c.restore_from(&file).unwrap();
    assert_eq!(app::note_count(&mut a), 300);
    assert_eq!(app::note_count(&mut b), 300);
}

/// A missing file is an error naming the path, the data stays, and the file is not created.
#[test]
fn missing_file_is_refused_and_not_created() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let err = pool.get().unwrap().restore_from(&missing).unwrap_err();
    match &err {
        BackupError::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected NotFound, got {other}"),
    }
    assert!(err.to_string().contains("missing.db"), "{err}");
    assert!(
        !missing.exists(),
        "restore created the file it was asked to read"
    );
    assert_untouched(&pool);
}

#[test]
fn directory_is_refused() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let err = pool.get().unwrap().restore_from(dir.path()).unwrap_err();
    assert!(matches!(err, BackupError::InvalidDatabase { .. }), "{err}");
    assert!(err.to_string().contains("directory"), "{err}");
    assert_untouched(&pool);
}

#[test]
fn random_bytes_empty_and_short_files_are_refused() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "random.db",
            (0..8192u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("empty.db", Vec::new()),
        ("short.db", b"SQLite format 3\0".to_vec()),
    ];
    for (name, bytes) in cases {
        let file = dir.path().join(name);
        fs::write(&file, bytes).unwrap();
        assert_refused(&pool, &file, name);
    }
}

/// Cutting the last pages off a valid file makes it disagree with its own header.
#[test]
fn truncated_file_is_refused() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "cut.db", 500);
    let bytes = fs::read(&file).unwrap();
    for keep in [bytes.len() - 4096, bytes.len() / 2, 4096 + 100] {
        fs::write(&file, &bytes[..keep]).unwrap();
        assert_refused(&pool, &file, &format!("keep {keep}"));
    }
}

/// A header whose page count disagrees with the size, or with a bad page size.
#[test]
fn inconsistent_headers_are_refused() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "hdr.db", 50);
    let good = fs::read(&file).unwrap();

    let mut more_pages = good.clone();
    let pages = u32::from_be_bytes(good[28..32].try_into().unwrap());
    more_pages[28..32].copy_from_slice(&(pages + 10).to_be_bytes());
    // Fewer pages than the file holds: SQLite itself would trust the header and copy a
    // database whose b-trees point past its end.
    let mut fewer_pages = good.clone();
    fewer_pages[28..32].copy_from_slice(&(pages / 2).to_be_bytes());
    let mut bad_page_size = good.clone();
    bad_page_size[16..18].copy_from_slice(&1000u16.to_be_bytes());
    let mut bad_magic = good.clone();
    bad_magic[0] = b's';

    for (what, bytes) in [
        ("more pages", more_pages),
        ("fewer pages", fewer_pages),
        ("page size", bad_page_size),
        ("magic", bad_magic),
    ] {
        fs::write(&file, bytes).unwrap();
        assert_refused(&pool, &file, what);
    }
}

/// A file longer than its header's page count is legal (SQLITE_FCNTL_CHUNK_SIZE preallocates
/// space that way) and restores.
#[test]
fn file_longer_than_its_pages_restores() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "long.db", 40);
    let mut bytes = fs::read(&file).unwrap();
    bytes.resize(bytes.len() + (1 << 20), 0);
    fs::write(&file, &bytes).unwrap();
    let pool = precious();
    pool.get().unwrap().restore_from(&file).unwrap();
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 40);
}

/// Page-level corruption passes the cheap checks; `verify_integrity` refuses it.
#[test]
fn verify_integrity_refuses_corrupt_pages() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "rot.db", 2_000);
    let mut bytes = fs::read(&file).unwrap();
    // Scribble over the middle of the file, well past the schema page.
    let mid = bytes.len() / 2 / 4096 * 4096;
    for b in &mut bytes[mid..mid + 4096] {
        *b = 0x5a;
    }
    fs::write(&file, &bytes).unwrap();
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(&file, BackupOptions::default().verify_integrity(true))
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidDatabase { .. }), "{err}");
    assert!(err.to_string().contains("integrity"), "{err}");
    assert_untouched(&pool);
}

/// A file with 1024-byte pages restores into a fresh pool and into one that holds data
/// (where plain sqlite3_backup fails with SQLITE_READONLY), and the result is complete.
#[test]
fn page_size_mismatch_into_empty_and_non_empty_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small-pages.db");
    {
        let mut c = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        c.batch_execute("PRAGMA page_size = 1024; VACUUM;").unwrap();
        app::migrate(&mut c);
        app::fill(&mut c, "small", 400, 300);
        assert_eq!(
            scalar(&mut c, "SELECT page_size AS n FROM pragma_page_size"),
            1024
        );
    }

    let fresh = memory_pool().unwrap();
    fresh.get().unwrap().restore_from(&file).unwrap();
    assert_eq!(app::note_count(&mut fresh.get().unwrap()), 400);

    let busy = precious();
    busy.get().unwrap().restore_from(&file).unwrap();
    let mut c = busy.get().unwrap();
    assert_eq!(app::note_count(&mut c), 400);
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) AS n FROM notebooks WHERE title = 'filled'"
        ),
        0
    );
    assert_eq!(common::integrity_of(&mut c), "ok");
}

/// A WAL-mode file is read with its -wal contents, not just the main file.
#[test]
fn wal_file_with_uncheckpointed_rows_restores_all_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wal.db");
    let mut writer = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    writer
        .batch_execute("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    app::migrate(&mut writer);
    app::fill(&mut writer, "wal", 123, 10);
    assert!(dir.path().join("wal.db-wal").exists());

    let pool = precious();
    pool.get().unwrap().restore_from(&file).unwrap();
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 123);
    drop(writer);
}

/// A connection with a transaction open is "in use" and is refused at once.
#[test]
fn destination_with_open_transaction_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "x.db", 3);
    let pool = precious();
    let mut c = pool.get().unwrap();
    c.batch_execute("BEGIN").unwrap();
    let err = c.restore_from(&file).unwrap_err();
    assert!(matches!(err, BackupError::DestinationInUse { .. }), "{err}");
    c.batch_execute("ROLLBACK").unwrap();
    drop(c);
    assert_untouched(&pool);
}

/// An index that disagrees with its table passes `quick_check` but not `integrity_check`:
/// `verify_integrity(true)` must refuse it (it used to run `quick_check` and let it through),
/// and without verification the file is still restorable, as SQLite itself would open it.
#[test]
fn verify_integrity_catches_an_index_that_disagrees_with_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad-index.db");
    // The index is built over column `a`, then its schema entry is repointed at column `b`:
    // every index entry now disagrees with the row it points to.
    let script = format!(
        "import sqlite3\n\
         c = sqlite3.connect({path:?})\n\
         c.executescript('''\n\
           CREATE TABLE t(a, b);\n\
           CREATE INDEX i ON t(a);\n\
           WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 50)\n\
           INSERT INTO t SELECT x, 1000 - x FROM n;\n\
           PRAGMA writable_schema = ON;\n\
           UPDATE sqlite_schema SET sql = 'CREATE INDEX i ON t(b)' WHERE name = 'i';\n\
         ''')\n\
         c.commit()\n\
         c.close()\n\
         c = sqlite3.connect({path:?})\n\
         print(c.execute('PRAGMA quick_check').fetchone()[0])\n\
         print(c.execute('PRAGMA integrity_check').fetchone()[0])\n",
        path = file.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let report = String::from_utf8_lossy(&out.stdout);
    let mut lines = report.lines();
    assert_eq!(
        lines.next(),
        Some("ok"),
        "quick_check should miss it: {report}"
    );
    assert_ne!(
        lines.next(),
        Some("ok"),
        "integrity_check should see it: {report}"
    );

    let pool = precious();
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(&file, BackupOptions::default().verify_integrity(true))
        .unwrap_err();
    assert!(
        matches!(&err, BackupError::InvalidDatabase { reason, .. } if reason.contains("integrity")),
        "{err:?}"
    );
    assert_untouched(&pool);
}

/// A file connection asked to restore its own file is refused at once (it used to wait for
/// its own lock until the deadline).
#[test]
fn restoring_a_connections_own_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("own.db");
    filled_pool(3, 10).get().unwrap().save_as(&file).unwrap();
    let mut conn = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    let err = conn
        .restore_from_with(
            &file,
            BackupOptions::default().timeout(std::time::Duration::from_secs(30)),
        )
        .unwrap_err();
    assert!(matches!(err, BackupError::SameFile { .. }), "{err:?}");
    assert_eq!(app::note_count(&mut conn), 3);
}

/// The copy runs with a small page cache on the pool's connection, which then gets its own
/// setting back, whether the restore completes or is cancelled mid-copy.
#[test]
fn the_connections_cache_size_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_file(dir.path(), "big.db", 2_000);
    let pool = precious();
    let mut conn = pool.get().unwrap();
    conn.batch_execute("PRAGMA cache_size = -5000").unwrap();
    let cache = |c: &mut diesel::SqliteConnection| {
        scalar(c, "SELECT cache_size AS n FROM pragma_cache_size")
    };
    conn.restore_from(&file).unwrap();
    assert_eq!(cache(&mut conn), -5000);

    let token = diesel_sqlite_backup::CancelToken::new();
    let in_callback = token.clone();
    let options = BackupOptions::default()
        .pages_per_step(1)
        .cancel_token(&token)
        .on_progress(move |_| in_callback.cancel());
    let err = conn.restore_from_with(&file, options).unwrap_err();
    assert!(matches!(err, BackupError::Cancelled { .. }), "{err:?}");
    assert_eq!(cache(&mut conn), -5000);
    assert_eq!(app::note_count(&mut conn), 2_000);
}
