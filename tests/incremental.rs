//! Incremental saves (`BackupOptions::incremental`): only changed pages are written, the file
//! always equals memory afterwards, anything doubtful falls back to a full save, readers never
//! see a torn file, and a kill at any moment leaves a file any SQLite recovers.
//!
//! Set `DSB_LONG=1` for the long crash mode (2,000 kills).

#[path = "incremental/crash.rs"]
mod crash;
#[allow(dead_code)]
#[path = "wild/py.rs"]
mod py;
#[path = "incremental/readers.rs"]
mod readers;
#[allow(dead_code)]
#[path = "wild/scripts.rs"]
mod scripts;
#[path = "incremental/stale.rs"]
mod stale;
#[path = "incremental/support.rs"]
mod support;

mod common;

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt};
use support::*;

const ROWS: usize = 20_000;

/// Runs the test body in a child process of its own, so `wchar` counts only its writes.
fn alone(name: &str) -> bool {
    const CHILD: &str = "DSB_INCREMENTAL_ALONE";
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// A 1% change writes at most 5% of the file's bytes (journal included), in place.
#[test]
fn one_percent_change_writes_at_most_five_percent() {
    if !alone("one_percent_change_writes_at_most_five_percent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = ledger(ROWS);
    pool.get().unwrap().save_as(&path).unwrap();
    let (ino, size) = (inode(&path), std::fs::metadata(&path).unwrap().len());
    for round in 0..3 {
        transfer(&mut pool.get().unwrap(), ROWS, 1.0, round);
        let mut c = pool.get().unwrap();
        let written = bytes_written(|| c.save_as_with(&path, incremental()).unwrap());
        drop(c);
        eprintln!(
            "round {round}: {written} bytes written of {size} ({:.2}%)",
            written as f64 * 100.0 / size as f64
        );
        assert!(
            written * 20 <= size,
            "round {round}: {written} bytes written for a {size}-byte file"
        );
        assert_eq!(inode(&path), ino, "saved in place");
        assert_file_equals_memory(&pool, &path, "after a 1% change");
    }
    // Nothing changed: nothing written at all.
    let mut c = pool.get().unwrap();
    let written = bytes_written(|| c.save_as_with(&path, incremental()).unwrap());
    assert_eq!(written, 0, "an unchanged database writes nothing");
}

/// A database loaded with `restore_from` and edited slightly saves back in place; the
/// file was made by Python's SQLite, not by this crate.
#[test]
fn restored_then_edited_saves_back_incrementally() {
    if !alone("restored_then_edited_saves_back_incrementally") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    py::run(
        "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         con.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)')\n\
         con.execute('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20000) INSERT INTO t SELECT i, randomblob(300) FROM n')\n\
         con.close()",
        &[path.to_str().unwrap()],
    );
    let (ino, size) = (inode(&path), std::fs::metadata(&path).unwrap().len());
    let pool = memory_pool().unwrap();
    pool.get().unwrap().restore_from(&path).unwrap();
    pool.get()
        .unwrap()
        .batch_execute("UPDATE t SET v = randomblob(300) WHERE id BETWEEN 500 AND 520")
        .unwrap();
    let mut c = pool.get().unwrap();
    let written = bytes_written(|| c.save_as_with(&path, incremental()).unwrap());
    drop(c);
    assert!(
        written * 20 <= size,
        "{written} bytes written for a {size}-byte file"
    );
    assert_eq!(inode(&path), ino, "saved in place");
    assert_file_equals_memory(&pool, &path, "restored, edited, saved");
}

/// Growth, shrink, new and dropped tables and indexes, and VACUUM: after each incremental
/// save the file equals memory, page for page and row for row.
#[test]
fn every_kind_of_change_leaves_the_file_equal_to_memory() {
    if !alone("every_kind_of_change_leaves_the_file_equal_to_memory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    // Loaded by restore_from into a pool whose schema cookie is behind the file's, so a
    // copied cookie could come back to the file's value with another schema.
    ledger(2_000).get().unwrap().save_as(&path).unwrap();
    py::run(
        "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         for i in range(6): con.execute('CREATE TABLE x%d(y)' % i)\n\
         for i in range(6): con.execute('DROP TABLE x%d' % i)\n\
         con.close()",
        &[path.to_str().unwrap()],
    );
    let pool = memory_pool().unwrap();
    pool.get().unwrap().restore_from(&path).unwrap();
    // A long-lived reader keeps its parsed schema while the file's schema cookie holds: it
    // reads now, at the file's cookie, and the first step brings memory's cookie to exactly
    // that value with more tables.
    let mut reader = diesel_sqlite_backup::establish(path.to_str().unwrap()).unwrap();
    let version = "SELECT schema_version AS n FROM pragma_schema_version";
    let gap = scalar(&mut reader, version) - scalar(&mut pool.get().unwrap(), version);
    assert!(gap > 0, "the file's schema cookie is ahead of memory's");
    let creates: String = (0..gap).map(|i| format!("CREATE TABLE c{i}(x);")).collect();
    let last_table = format!("SELECT count(*) AS n FROM c{}", gap - 1);
    // (what, SQL, only the changes saved): a change that rewrites most pages saves in full,
    // in place through SQLite (the file keeps its inode, and the reader its connection).
    let steps = [
        ("schema change to the file's old cookie", creates.as_str(), true),
        ("growth", "INSERT INTO a SELECT id + 100000, 0, randomblob(900) FROM a", true),
        ("new table and index", "CREATE TABLE c(x, y); CREATE INDEX c_x ON c(x); INSERT INTO c SELECT id, pad FROM b", true),
        ("new index", "CREATE INDEX b_pad ON b(pad)", true),
        ("shrink by delete", "DELETE FROM a WHERE id > 100000", true),
        ("VACUUM (shrink)", "VACUUM", false),
        ("dropped index", "DROP INDEX b_pad", true),
        ("dropped table", "DROP TABLE c", true),
        ("VACUUM again", "VACUUM", false),
        ("rolled back transaction", "BEGIN; DELETE FROM b; INSERT INTO b SELECT id + 5, 0, randomblob(2000) FROM a; ROLLBACK", true),
        ("small edit", "UPDATE b SET pad = x'00' WHERE id = 7", true),
        ("growth again", "INSERT INTO b SELECT id + 100000, 0, randomblob(3000) FROM a WHERE id < 500", true),
    ];
    let ino = inode(&path);
    for (what, sql, only_changes) in steps {
        pool.get().unwrap().batch_execute(sql).unwrap();
        let mut c = pool.get().unwrap();
        let written = bytes_written(|| c.save_as_with(&path, incremental()).unwrap());
        drop(c);
        let size = std::fs::metadata(&path).unwrap().len();
        // A full save writes every page, and a journal of the old ones besides.
        assert_eq!(
            written < size,
            only_changes,
            "{what}: {written} bytes written of {size}"
        );
        assert_eq!(inode(&path), ino, "{what}: never replaced by rename");
        assert_file_equals_memory(&pool, &path, what);
        let tables = "SELECT count(*) AS n FROM sqlite_schema";
        let in_memory = scalar(&mut pool.get().unwrap(), tables);
        assert_eq!(
            scalar(&mut reader, tables),
            in_memory,
            "{what}: reader's schema"
        );
        let rows = "SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b) AS n";
        let in_memory = scalar(&mut pool.get().unwrap(), rows);
        assert_eq!(
            scalar(&mut reader, rows),
            in_memory,
            "{what}: reader's rows"
        );
        assert_eq!(
            scalar(&mut reader, &last_table),
            0,
            "{what}: reader sees the new tables"
        );
    }
}

/// Memory's page size differs from the file's: the save is full, and correct. In incremental
/// mode it goes in place, so the file itself changes its page size under SQLite's journal.
#[test]
fn page_size_change_saves_in_full() {
    if !alone("page_size_change_saves_in_full") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = ledger(500);
    pool.get().unwrap().save_as(&path).unwrap();
    let ino = inode(&path);
    for page_size in [8192, 512, 65536] {
        // Memory takes another page size from a file Python made.
        let other = dir.path().join(format!("other-{page_size}.db"));
        py::run(
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             con.execute('PRAGMA page_size=%d' % int(sys.argv[2]))\n\
             con.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)')\n\
             con.execute('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000) INSERT INTO t SELECT i, randomblob(200) FROM n')\n\
             con.close()",
            &[other.to_str().unwrap(), &page_size.to_string()],
        );
        let pool = memory_pool().unwrap(); // a fresh pool takes the file's page size
        pool.get().unwrap().restore_from(&other).unwrap();
        let query = "SELECT page_size AS n FROM pragma_page_size";
        assert_eq!(scalar(&mut pool.get().unwrap(), query), page_size);
        assert!(saved_in_full(&pool, &path), "{page_size}: a full save");
        assert_eq!(inode(&path), ino, "{page_size}: in place, not renamed over");
        assert_eq!(py::scalar(&path, "PRAGMA page_size"), page_size.to_string());
        assert_file_equals_memory(&pool, &path, "page size change");
        // And the next small change goes in place as only the changes.
        pool.get()
            .unwrap()
            .batch_execute("UPDATE t SET v = x'01' WHERE id = 3")
            .unwrap();
        assert!(
            !saved_in_full(&pool, &path),
            "{page_size}: then incremental"
        );
        assert_file_equals_memory(&pool, &path, "after the page size change");
    }
}

/// Another writer changed the file, or a different file was renamed over it: the save is
/// full (in place: every page and a journal of the old ones are written), and afterwards the
/// file equals memory exactly.
#[test]
fn file_changed_or_replaced_behind_our_back_saves_in_full() {
    if !alone("file_changed_or_replaced_behind_our_back_saves_in_full") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = ledger(2_000);
    pool.get().unwrap().save_as(&path).unwrap();

    // Another writer (Python's SQLite) commits to the file.
    py::run(
        "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         con.execute('UPDATE b SET pad = zeroblob(10) WHERE id < 50')\n\
         con.close()",
        &[path.to_str().unwrap()],
    );
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 3);
    assert!(
        saved_in_full(&pool, &path),
        "a full save after another writer"
    );
    assert_file_equals_memory(&pool, &path, "after another writer");

    // The same again, in place once more.
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 4);
    assert!(
        !saved_in_full(&pool, &path),
        "back to saving only the changes"
    );
    assert_file_equals_memory(&pool, &path, "in place after the full save");

    // A different file (same size, same change counter: an old copy) renamed over it.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 5);
    let replaced = inode(&path);
    assert!(saved_in_full(&pool, &path), "a full save after a rename");
    assert_eq!(inode(&path), replaced, "written in place, not renamed over");
    assert_file_equals_memory(&pool, &path, "after a rename over the file");

    // Saved elsewhere in between: the old path is no longer the baseline.
    let other = dir.path().join("other.db");
    pool.get().unwrap().save_as(&other).unwrap();
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 6);
    assert!(
        saved_in_full(&pool, &path),
        "the baseline moved to the other file"
    );
    assert_file_equals_memory(&pool, &path, "after a save elsewhere");
}

/// Saves the pool incrementally into `path`; true if every page was written (a full save).
fn saved_in_full(pool: &Pool, path: &std::path::Path) -> bool {
    let mut c = pool.get().unwrap();
    let written = bytes_written(|| c.save_as_with(path, incremental()).unwrap());
    written >= std::fs::metadata(path).unwrap().len()
}

/// Incremental is off by default and falls back for connections without a tracker.
#[test]
fn plain_connections_fall_back_to_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let mut conn = diesel_sqlite_backup::establish(":memory:").unwrap();
    conn.batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    conn.save_as_with(&path, incremental()).unwrap();
    conn.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    conn.save_as_with(&path, incremental()).unwrap();
    assert_eq!(py::scalar(&path, "SELECT count(*) FROM t"), "2");
}

/// A load that converts (a WAL file, another text encoding) leaves no baseline: the next
/// incremental save is full, and the file then equals memory, in rollback mode.
#[test]
fn restore_with_conversion_leaves_no_baseline() {
    if !alone("restore_with_conversion_leaves_no_baseline") {
        return;
    }
    for kind in ["wal", "utf16"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.db");
        py::run(
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             if sys.argv[2] == 'wal': con.execute('PRAGMA journal_mode=WAL')\n\
             else: con.execute(\"PRAGMA encoding='UTF-16le'\")\n\
             con.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)')\n\
             con.execute('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000) INSERT INTO t SELECT i, hex(randomblob(100)) FROM n')\n\
             con.close()",
            &[path.to_str().unwrap(), kind],
        );
        let pool = memory_pool().unwrap();
        pool.get().unwrap().restore_from(&path).unwrap();
        pool.get()
            .unwrap()
            .batch_execute("UPDATE t SET v = 'x' WHERE id = 5")
            .unwrap();
        assert!(saved_in_full(&pool, &path), "{kind}: a full save");
        assert_eq!(py::scalar(&path, "PRAGMA journal_mode"), "delete", "{kind}");
        assert_file_equals_memory(&pool, &path, kind);
    }
}

/// A commit made by another pooled connection while a full save runs (here: right after its
/// last step, before it returns) is in the next incremental save: the record of writes
/// restarts before the copy, never after it. Both full routes: in place over an existing
/// database, and by rename into a new file.
#[test]
fn commits_racing_a_full_save_reach_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    for existing in [true, false] {
        let path = dir.path().join(format!("doc-{existing}.db"));
        if existing {
            ledger(300).get().unwrap().save_as(&path).unwrap(); // another database
        }
        // Two connections: one saves, the other commits during the save.
        let pool = r2d2::Pool::builder()
            .max_size(2)
            .thread_pool(diesel_sqlite_backup::shared_thread_pool())
            .build(diesel_sqlite_backup::SingletonManager::new())
            .unwrap();
        let content = ledger(2_000).get().unwrap().snapshot().unwrap();
        pool.get().unwrap().restore_from_bytes(&content).unwrap();
        let writer = pool.clone();
        let raced = std::cell::Cell::new(false);
        let mut c = pool.get().unwrap();
        let options = incremental().pages_per_step(20).on_progress(|p| {
            if p.remaining == 0 && !raced.get() {
                raced.set(true);
                let mut other = writer.get().unwrap();
                transfer(&mut other, 2_000, 1.0, 11);
            }
        });
        c.save_as_with(&path, options).unwrap();
        drop(c);
        assert!(raced.get(), "the race ran");
        assert!(!saved_in_full(&pool, &path), "then only the changes");
        assert_file_equals_memory(&pool, &path, "after a commit raced the full save");
    }
}
