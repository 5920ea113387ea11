//! `restore_from`: Open never loses the current data, never creates the file it reads, and
//! copes with page-size differences.

mod common;

use std::fs;
use std::path::Path;

use common::{app, filled_pool, python, scalar, Pool};
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
fn random_bytes_and_short_files_are_refused() {
    let pool = precious();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "random.db",
            (0..8192u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("fifty bytes.db", vec![0; 50]),
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

/// Python's `sqlite3.connect()` leaves a zero-byte file, which SQLite, rusqlite and Python
/// read as an empty database. Open loads it as one, the old data replaced by nothing (it
/// used to be refused as shorter than a header), also into a pool whose pages are another
/// size; the file is not written. So does a one-byte file, which SQLite's unix VFS reports
/// as empty (a work-around for an old OS X file system). A missing file and other short
/// files are still refused (above).
#[test]
fn a_zero_byte_file_loads_as_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.db");
    let connect = "import sqlite3, sys\nsqlite3.connect(sys.argv[1]).close()";
    python(connect, &[file.to_str().unwrap()]);
    assert_eq!(fs::metadata(&file).unwrap().len(), 0);
    let one_byte = dir.path().join("one-byte.db");
    fs::write(&one_byte, b"x").unwrap();
    // A fresh pool, and pools holding 7 notes in pages of 4096 and of 1024 bytes.
    let pool_with = |pages: Option<u32>| {
        let pool = memory_pool().unwrap();
        if let Some(size) = pages {
            let mut c = pool.get().unwrap();
            c.batch_execute(&format!("PRAGMA page_size = {size}"))
                .unwrap();
            app::migrate(&mut c);
            app::fill(&mut c, "old", 7, 10);
        }
        pool
    };
    for pages in [None, Some(4096), Some(1024)] {
        let what = format!("pool with pages {pages:?}");
        for (file, verify) in [(&file, false), (&file, true), (&one_byte, false)] {
            let pool = pool_with(pages);
            let options = BackupOptions::default().verify_integrity(verify);
            pool.get()
                .unwrap()
                .restore_from_with(file, options)
                .unwrap_or_else(|e| panic!("{what}, {file:?}, verify {verify}: {e}"));
            let mut c = pool.get().unwrap();
            let schema = scalar(&mut c, "SELECT count(*) AS n FROM sqlite_schema");
            assert_eq!(schema, 0, "{what}: the old data is still there");
            app::migrate(&mut c);
            app::fill(&mut c, "new", 2, 10);
            assert_eq!(app::note_count(&mut c), 2, "{what}");
        }
    }
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        0,
        "the file was written"
    );
    assert_eq!(fs::read(&one_byte).unwrap(), b"x", "the file was written");
}

/// A file whose header's text-encoding field (bytes 56..60) says 4, 8 or 256: SQLite opens
/// a main database by the field's low two bits, 0 meaning UTF-8, so Python, rusqlite and the
/// `sqlite3` shell read it as UTF-8. Page 1 copied as it was left the field in the pool, whose
/// connections had fixed UTF-8, and every statement on every connection failed from then on
/// ("attached databases must use the same text encoding as main database"), later restores
/// included. Now the pool holds the file's data, takes writes, and a later restore works.
#[test]
fn a_file_whose_encoding_field_sqlite_reads_as_utf8_loads() {
    let dir = tempfile::tempdir().unwrap();
    let later = saved_file(dir.path(), "later.db", 5);
    for (field, file, _) in common::odd_encoding_files(dir.path()) {
        common::assert_odd_encoding_loads(
            &format!("field {field}"),
            |conn, options| conn.restore_from_with(&file, options),
            |conn| conn.restore_from(&later),
        );
    }
}

/// The same file copied into connections that are not a pool's (a file, `:memory:`), each of
/// which has read a schema and so fixed its encoding: `backup_to` and `restore_from` bring
/// page 1 in as SQLite reads it, and the connection keeps working.
#[test]
fn an_odd_encoding_field_reaches_other_connections_as_sqlite_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("field-4.db");
    common::python_words_file(&file, Some(4));
    let target = dir.path().join("target.db");
    let used = |url: &str| {
        let mut conn = SqliteConnection::establish(url).unwrap();
        conn.batch_execute("CREATE TABLE old(x); INSERT INTO old VALUES (1);")
            .unwrap();
        conn
    };
    let mut dests = [
        ("file, backup_to", used(target.to_str().unwrap()), true),
        ("memory, backup_to", used(":memory:"), true),
        ("memory, restore_from", used(":memory:"), false),
    ];
    for (what, dest, backup_to) in &mut dests {
        if *backup_to {
            let mut src = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
            src.backup_to(dest, BackupOptions::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        } else {
            dest.restore_from(&file)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let sql = "SELECT count(*) AS n FROM words";
        assert_eq!(scalar(dest, sql), common::PYTHON_WORDS, "{what}");
        dest.batch_execute("INSERT INTO words(word) VALUES ('added')")
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(common::integrity_of(dest), "ok", "{what}");
    }
}
