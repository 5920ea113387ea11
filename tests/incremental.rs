//! Incremental saves (`BackupOptions::incremental`): only changed pages are written, the file
//! always equals memory afterwards, anything doubtful falls back to a full save, readers never
//! see a torn file, and a kill at any moment leaves a file any SQLite recovers.
//!
//! Set `DSB_LONG=1` for the long crash mode (2,000 kills).

#[path = "incremental/crash.rs"]
mod crash;
#[path = "incremental/fallback.rs"]
mod fallback;
#[allow(dead_code)]
#[path = "wild/py.rs"]
mod py;
#[path = "incremental/readers.rs"]
mod readers;
#[path = "incremental/restores.rs"]
mod restores;
#[allow(dead_code)]
#[path = "wild/scripts.rs"]
mod scripts;
#[path = "incremental/stale.rs"]
mod stale;
#[path = "incremental/support.rs"]
mod support;

mod common;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{memory_pool, BackupExt};
use support::*;

const ROWS: usize = 20_000;

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
    let mut reader = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
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
