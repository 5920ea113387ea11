//! When an incremental save is full instead, and that full saves in this mode are in place:
//! another writer, a rename, another page size, a conversion, a racing commit, a busy file.

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{memory_pool, BackupExt};

use crate::py;
use crate::support::*;

/// Memory's page size differs from the file's: the save is full, and correct. In incremental
/// mode it goes in place, so the file itself changes its page size under SQLite's journal.
#[test]
fn page_size_change_saves_in_full() {
    if !alone("fallback::page_size_change_saves_in_full") {
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
    if !alone("fallback::file_changed_or_replaced_behind_our_back_saves_in_full") {
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

/// Incremental is off by default and falls back for connections without a tracker.
#[test]
fn plain_connections_fall_back_to_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();
    conn.save_as_with(&path, incremental()).unwrap();
    conn.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    conn.save_as_with(&path, incremental()).unwrap();
    assert_eq!(py::scalar(&path, "SELECT count(*) FROM t"), "2");
}

/// A load that converts (a WAL file, another text encoding) leaves no baseline: the next
/// incremental save is full, and the file then equals memory, in rollback mode. So does a
/// load whose page 1 the pool rewrote (an encoding field of 4, which SQLite reads as UTF-8).
#[test]
fn restore_with_conversion_leaves_no_baseline() {
    if !alone("fallback::restore_with_conversion_leaves_no_baseline") {
        return;
    }
    for kind in ["wal", "utf16", "encoding field 4"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.db");
        py::run(
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             if sys.argv[2] == 'wal': con.execute('PRAGMA journal_mode=WAL')\n\
             elif sys.argv[2] == 'utf16': con.execute(\"PRAGMA encoding='UTF-16le'\")\n\
             con.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)')\n\
             con.execute('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000) INSERT INTO t SELECT i, hex(randomblob(100)) FROM n')\n\
             con.close()\n\
             if sys.argv[2] == 'encoding field 4':\n\
             \x20   f = open(sys.argv[1], 'r+b'); f.seek(56); f.write((4).to_bytes(4, 'big')); f.close()",
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
    if !alone("fallback::commits_racing_a_full_save_reach_the_next_save") {
        return;
    }
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

/// Python holds a read transaction on the file: a save in place (incremental, or full over
/// an existing database) waits within its timeout, fails with `Busy`, and changes nothing;
/// once the reader lets go, the next save goes through and the file equals memory. The
/// failed incremental save kept its record, so the next one is incremental too, and holds
/// the pages changed before the failure.
#[test]
fn a_reader_holding_the_file_makes_the_save_busy_not_torn() {
    if !alone("fallback::a_reader_holding_the_file_makes_the_save_busy_not_torn") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for has_baseline in [true, false] {
        let path = dir.path().join(format!("doc-{has_baseline}.db"));
        let pool = ledger(1_000);
        if has_baseline {
            pool.get().unwrap().save_as(&path).unwrap();
        } else {
            ledger(100).get().unwrap().save_as(&path).unwrap(); // another database
        }
        let before = std::fs::read(&path).unwrap();
        let stop = dir.path().join(format!("stop-{has_baseline}"));
        let mut reader = py::Live::spawn(
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             con.execute('BEGIN')\n\
             con.execute('SELECT count(*) FROM a').fetchone()\n\
             say('reading')\n\
             while not stopped(): time.sleep(0.01)\n\
             con.execute('COMMIT')\n\
             say('done')",
            &[path.to_str().unwrap()],
            &stop,
        );
        reader.wait_for("reading");
        transfer(&mut pool.get().unwrap(), 1_000, 1.0, 3);
        let short = incremental().timeout(std::time::Duration::from_millis(300));
        let err = pool.get().unwrap().save_as_with(&path, short).unwrap_err();
        assert!(err.is_busy(), "{has_baseline}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{has_baseline}: file changed"
        );
        assert_eq!(reader.stop(), "done");
        // Only the pool that saved this file has a baseline for it.
        let ino = inode(&path);
        assert_eq!(saved_in_full(&pool, &path), !has_baseline, "{has_baseline}");
        assert_eq!(inode(&path), ino, "{has_baseline}: not renamed over");
        assert_file_equals_memory(&pool, &path, "after the reader let go");
    }
}

/// A pool writer keeps the database's write lock past the save's timeout: the save fails
/// with `Busy` and changes nothing, instead of falling back to a full save that needs the same
/// lock. Its record survives, so the next save is incremental and holds every commit.
#[test]
fn a_writer_holding_the_pool_makes_the_save_busy_and_keeps_the_record() {
    if !alone("fallback::a_writer_holding_the_pool_makes_the_save_busy_and_keeps_the_record") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(diesel_sqlite_backup::SingletonManager::new())
        .unwrap();
    fill_ledger(&pool, 1_000);
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    transfer(&mut pool.get().unwrap(), 1_000, 1.0, 5);
    let before = std::fs::read(&path).unwrap();
    let mut writer = pool.get().unwrap();
    writer
        .batch_execute("BEGIN IMMEDIATE; UPDATE a SET pad = randomblob(250) WHERE id > 990;")
        .unwrap();
    let short = incremental().timeout(std::time::Duration::from_millis(300));
    let err = pool.get().unwrap().save_as_with(&path, short).unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file changed");
    writer.batch_execute("COMMIT").unwrap();
    drop(writer);
    assert!(!saved_in_full(&pool, &path), "the record was dropped");
    assert_file_equals_memory(&pool, &path, "after the writer let go");
}

/// A connection opened with plain `vfs=memdb` reaches the pool's database but bypasses the
/// crate's shim, so its writes are not recorded. Its commits still reach the file: the next
/// incremental save sees a change counter the record never saw and saves in full, also when
/// a recorded commit came after it.
#[test]
fn commits_that_bypass_the_record_still_reach_the_file() {
    if !alone("fallback::commits_that_bypass_the_record_still_reach_the_file") {
        return;
    }
    let manager = diesel_sqlite_backup::SingletonManager::new();
    let plain_uri = manager
        .uri()
        .replace("vfs=diesel-sqlite-backup-memdb", "vfs=memdb");
    assert_ne!(plain_uri, manager.uri(), "the pool's URI names the shim");
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .thread_pool(diesel_sqlite_backup::shared_thread_pool())
        .build(manager)
        .unwrap();
    let content = ledger(2_000).get().unwrap().snapshot().unwrap();
    pool.get().unwrap().restore_from_bytes(&content).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    pool.get().unwrap().save_as(&path).unwrap();
    let mut plain = SqliteConnection::establish(&plain_uri).unwrap();

    // The unrecorded commit is the last one.
    transfer(&mut plain, 2_000, 1.0, 1);
    assert!(saved_in_full(&pool, &path), "a full save");
    assert_file_equals_memory(&pool, &path, "after an unrecorded commit");

    // A recorded commit after an unrecorded one.
    transfer(&mut plain, 2_000, 1.0, 2);
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 3);
    assert!(saved_in_full(&pool, &path), "a full save");
    assert_file_equals_memory(&pool, &path, "after both");

    // Only recorded commits since: only the changes.
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 4);
    assert!(!saved_in_full(&pool, &path), "then only the changes");
    assert_file_equals_memory(&pool, &path, "after a recorded commit");
}

/// A symbolic link planted at the journal's name is never followed: the original pages are
/// not written to where it points, and the file keeps a consistent content.
#[test]
fn a_symlink_at_the_journal_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = ledger(1_000);
    pool.get().unwrap().save_as(&path).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let leak = outside.join("leak.bin");
    std::os::unix::fs::symlink(&leak, dir.path().join("doc.db-journal")).unwrap();
    transfer(&mut pool.get().unwrap(), 1_000, 1.0, 1);
    let saved = pool.get().unwrap().save_as_with(&path, incremental());
    assert!(!leak.exists(), "the link was followed ({saved:?})");
    assert_eq!(py::scalar(&path, "PRAGMA integrity_check"), "ok");
    assert_eq!(python_total(&path), TOTAL);
}

/// A pool transaction that spills its cache and rolls back writes the original page 1 back,
/// carrying the counter of an unrecorded commit before it. That write is no commit of the
/// record's: the unrecorded commit's pages must still reach the file (they were lost).
#[test]
fn a_spilled_rollback_does_not_hide_a_bypassing_commit() {
    let manager = diesel_sqlite_backup::SingletonManager::new();
    let plain_uri = manager
        .uri()
        .replace("vfs=diesel-sqlite-backup-memdb", "vfs=memdb");
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .thread_pool(diesel_sqlite_backup::shared_thread_pool())
        .build(manager)
        .unwrap();
    fill_ledger(&pool, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    pool.get().unwrap().save_as(&path).unwrap();
    let mut plain = SqliteConnection::establish(&plain_uri).unwrap();
    transfer(&mut plain, 2_000, 1.0, 1);
    // Page 1 is journalled (the file grows) but never spilled (the b-tree holds it); the
    // other pages spill into memory before the rollback.
    pool.get()
        .unwrap()
        .batch_execute(
            "PRAGMA cache_size = 5;
             BEGIN;
             INSERT INTO a SELECT id + 100000, 0, randomblob(250) FROM a;
             ROLLBACK;
             PRAGMA cache_size = -2000;",
        )
        .unwrap();
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    assert_file_equals_memory(&pool, &path, "after a spilled rollback");
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 2);
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    assert_file_equals_memory(&pool, &path, "and the next save");
}
