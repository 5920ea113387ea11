//! Snapshots: a database as bytes, out and back in, with the guarantees of Save As and Open.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{app, filled_pool, notes_in_file, pool_of, scalar, temp_files};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{memory_pool, BackupError, BackupExt, BackupOptions, Template};

/// Bytes from one pool load into another: every pooled connection sees them, and the pool
/// is writable afterwards.
#[test]
fn round_trip_through_bytes_into_another_pool() {
    let snapshot = filled_pool(300, 50).get().unwrap().snapshot().unwrap();
    assert!(snapshot.starts_with(b"SQLite format 3\0"));
    let pool = pool_of(3);
    pool.get().unwrap().restore_from_bytes(&snapshot).unwrap();
    let mut conns: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    for conn in &mut conns {
        assert_eq!(app::note_count(conn), 300);
    }
    app::fill(&mut conns[1], "after", 5, 10);
    assert_eq!(app::note_count(&mut conns[2]), 305);
}

/// Garbage, header-only, truncated and bad-magic bytes are refused with a clear error; the
/// data stays, the pool stays usable, and the caller's bytes are not modified.
#[test]
fn hostile_bytes_are_refused_and_keep_the_data() {
    let good = filled_pool(50, 100)
        .get()
        .unwrap()
        .snapshot()
        .unwrap()
        .into_vec();
    let mut bad_magic = good.clone();
    bad_magic[..6].copy_from_slice(b"SQLXte");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("header only", good[..100].to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("bad magic", bad_magic),
    ];
    let pool = filled_pool(7, 10);
    for (what, bytes) in cases {
        let before = bytes.clone();
        let err = pool.get().unwrap().restore_from_bytes(&bytes).unwrap_err();
        assert!(
            matches!(err, BackupError::InvalidDatabase { .. }),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string().contains("<snapshot bytes>"),
            "{what}: {err}"
        );
        assert_eq!(bytes, before, "{what}: the caller's bytes changed");
        assert_eq!(app::note_count(&mut pool.get().unwrap()), 7, "{what}");
    }
    app::fill(&mut pool.get().unwrap(), "still", 1, 1);
}

/// An image with another page size is converted into a pool that already holds data.
#[test]
fn page_size_mismatch_into_a_non_empty_pool() {
    let mut source = SqliteConnection::establish(":memory:").unwrap();
    source.batch_execute("PRAGMA page_size = 8192").unwrap();
    app::migrate(&mut source);
    app::fill(&mut source, "big pages", 40, 500);
    let snapshot = source.snapshot().unwrap();
    assert_eq!(u16::from_be_bytes([snapshot[16], snapshot[17]]), 8192);
    let pool = filled_pool(3, 10);
    pool.get().unwrap().restore_from_bytes(&snapshot).unwrap();
    let mut conn = pool.get().unwrap();
    assert_eq!(app::note_count(&mut conn), 40);
    assert_eq!(
        scalar(&mut conn, "SELECT page_size AS n FROM pragma_page_size"),
        4096
    );
    assert_eq!(common::integrity_of(&mut conn), "ok");
}

/// Attached and temp schemas can be snapshotted by name.
#[test]
fn attached_and_temp_schemas() {
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(
        "ATTACH ':memory:' AS aux; CREATE TABLE aux.t(x); INSERT INTO aux.t VALUES (1), (2);
         CREATE TEMP TABLE scratch(y); INSERT INTO scratch VALUES (3);",
    )
    .unwrap();
    for (schema, sql, expected) in [
        ("aux", "SELECT count(*) AS n FROM t", 2),
        ("temp", "SELECT sum(y) AS n FROM scratch", 3),
    ] {
        let snapshot = conn
            .snapshot_with(BackupOptions::default().schema(schema))
            .unwrap();
        let pool = memory_pool().unwrap();
        pool.get().unwrap().restore_from_bytes(&snapshot).unwrap();
        assert_eq!(scalar(&mut pool.get().unwrap(), sql), expected, "{schema}");
    }
}

/// A snapshot taken now and written later replaces an existing file atomically: the file
/// holds the snapshot's data and no temporary file is left.
#[test]
fn snapshot_save_as_replaces_a_file_without_litter() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("doc.db");
    filled_pool(5, 10).get().unwrap().save_as(&dest).unwrap();
    let pool = filled_pool(12, 10);
    let snapshot = pool.get().unwrap().snapshot().unwrap();
    app::fill(&mut pool.get().unwrap(), "later", 3, 10); // not in the snapshot
    snapshot.save_as(&dest).unwrap();
    assert_eq!(notes_in_file(&dest), 12);
    assert!(temp_files(dir.path()).is_empty());
    let err = snapshot.save_as(dir.path()).unwrap_err();
    assert!(matches!(err, BackupError::InvalidInput { .. }), "{err:?}");
}

/// Copies of a template made from bytes are isolated from each other; garbage is refused.
#[test]
fn template_from_bytes_copies_are_isolated() {
    let bytes = filled_pool(9, 10).get().unwrap().snapshot().unwrap();
    let template = Template::from_bytes(&bytes).unwrap();
    let (mut a, mut b) = (
        template.connection().unwrap(),
        template.connection().unwrap(),
    );
    a.batch_execute("DELETE FROM notes").unwrap();
    assert_eq!(app::note_count(&mut a), 0);
    assert_eq!(app::note_count(&mut b), 9);
    assert!(matches!(
        Template::from_bytes(b"not a database at all").unwrap_err(),
        BackupError::InvalidDatabase { .. }
    ));
}

/// Money moves between accounts on other pooled connections while snapshots are taken:
/// every snapshot holds the same total. Accounts are padded so that the two rows of a
/// transfer usually lie on different pages: a snapshot read between a commit's page writes
/// would show money that left one account and never arrived.
#[test]
fn snapshots_under_concurrent_transfers_hold_one_state() {
    let pool = pool_of(3);
    pool.get()
        .unwrap()
        .batch_execute(
            "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO accounts SELECT i, 1000, zeroblob(200) FROM n;",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let movers: Vec<_> = (0..2u64)
        .map(|seed| {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = pool.get().unwrap();
                let mut k = seed;
                while !stop.load(Ordering::Relaxed) {
                    k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let (from, to) = (k % 20000 + 1, (k >> 20) % 20000 + 1);
                    let _ = conn.batch_execute(&format!(
                        "BEGIN IMMEDIATE; UPDATE accounts SET balance = balance - 7 WHERE id = {from};
                         UPDATE accounts SET balance = balance + 7 WHERE id = {to}; COMMIT;"
                    ));
                    let _ = conn.batch_execute("ROLLBACK");
                }
            })
        })
        .collect();
    let mut snapshotter = pool.get().unwrap();
    for _ in 0..100 {
        let snapshot = snapshotter
            .snapshot_with(BackupOptions::default().pages_per_step(2))
            .unwrap();
        let mut copy = Template::from_bytes(&snapshot)
            .unwrap()
            .connection()
            .unwrap();
        assert_eq!(
            scalar(&mut copy, "SELECT sum(balance) AS n FROM accounts"),
            20_000_000
        );
    }
    stop.store(true, Ordering::Relaxed);
    for mover in movers {
        mover.join().unwrap();
    }
}

/// A WAL-mode file with frames still in its -wal: the snapshot holds the committed rows,
/// opens as a file with any SQLite, and loads into a pool.
#[test]
fn wal_file_snapshot_holds_the_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wal.db");
    let mut conn = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;")
        .unwrap();
    app::migrate(&mut conn);
    app::fill(&mut conn, "wal", 25, 100);
    let snapshot = conn.snapshot().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, &snapshot).unwrap();
    assert_eq!(notes_in_file(&copy), 25);
    let pool = filled_pool(2, 2);
    let before = snapshot.to_vec();
    pool.get().unwrap().restore_from_bytes(&snapshot).unwrap();
    assert_eq!(snapshot.to_vec(), before, "the snapshot's bytes changed");
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 25);
}

/// Like save_as, a snapshot of a connection with its own write transaction open is refused.
#[test]
fn snapshot_inside_own_write_transaction_is_refused() {
    let pool = filled_pool(3, 3);
    let mut conn = pool.get().unwrap();
    conn.batch_execute("BEGIN IMMEDIATE; DELETE FROM notes;")
        .unwrap();
    let err = conn.snapshot().unwrap_err();
    assert!(
        matches!(err, BackupError::SourceInWriteTransaction { .. }),
        "{err:?}"
    );
    conn.batch_execute("ROLLBACK").unwrap();
}

/// A snapshot can be sent to and shared with other threads (to a network task, a cache).
#[test]
fn snapshot_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug + AsRef<[u8]>>() {}
    assert_send_sync::<diesel_sqlite_backup::Snapshot>();
}

/// Temp and attached `:memory:` schemas of a pooled connection (whose VFS is the pool's) are
/// snapshots of SQLite's own in-memory pager, not of the pool's database.
#[test]
fn temp_and_attached_memory_schemas_of_a_pooled_connection() {
    let pool = filled_pool(4, 10);
    let mut conn = pool.get().unwrap();
    conn.batch_execute(
        "CREATE TEMP TABLE pt(x); INSERT INTO pt VALUES (5);
         ATTACH ':memory:' AS am; CREATE TABLE am.z(y); INSERT INTO am.z VALUES (6), (7);",
    )
    .unwrap();
    for (schema, sql, expected) in [
        ("temp", "SELECT sum(x) AS n FROM pt", 5),
        ("am", "SELECT sum(y) AS n FROM z", 13),
    ] {
        let snapshot = conn
            .snapshot_with(BackupOptions::default().schema(schema))
            .unwrap_or_else(|e| panic!("{schema}: {e}"));
        let mut copy = Template::from_bytes(&snapshot)
            .unwrap()
            .connection()
            .unwrap();
        assert_eq!(scalar(&mut copy, sql), expected, "{schema}");
    }
}

/// An image whose header asks for a newer file format to write it would leave the pool
/// read-only for good: it is refused, and the pool keeps its data and stays writable.
#[test]
fn image_sqlite_may_only_read_is_refused() {
    let mut image = filled_pool(5, 10)
        .get()
        .unwrap()
        .snapshot()
        .unwrap()
        .into_vec();
    image[18] = 3;
    let pool = filled_pool(7, 10);
    let err = pool.get().unwrap().restore_from_bytes(&image).unwrap_err();
    assert!(
        matches!(&err, BackupError::InvalidDatabase { reason, .. } if reason.contains("write version 3")),
        "{err:?}"
    );
    app::fill(&mut pool.get().unwrap(), "writable", 1, 1);
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 8);
}

/// No bytes are what SQLite reads as an empty database (a zero-byte file), so they load as
/// one: the old data is replaced by nothing and the pool stays usable (they used to be
/// refused as shorter than a header). A template from them holds an empty database.
#[test]
fn empty_bytes_load_as_an_empty_database() {
    for (used, verify) in [(false, false), (true, false), (true, true)] {
        let what = format!("used {used}, verify {verify}");
        let pool = if used {
            filled_pool(7, 10)
        } else {
            memory_pool().unwrap()
        };
        pool.get()
            .unwrap()
            .restore_from_bytes_with(&[], BackupOptions::default().verify_integrity(verify))
            .expect(&what);
        let mut conn = pool.get().unwrap();
        assert_eq!(
            scalar(&mut conn, "SELECT count(*) AS n FROM sqlite_schema"),
            0,
            "{what}"
        );
        app::migrate(&mut conn);
        app::fill(&mut conn, "new", 2, 10);
        assert_eq!(app::note_count(&mut conn), 2, "{what}");
    }
    let mut conn = Template::from_bytes(&[]).unwrap().connection().unwrap();
    assert_eq!(
        scalar(&mut conn, "SELECT count(*) AS n FROM sqlite_schema"),
        0
    );
}

/// Bytes whose header's text-encoding field (bytes 56..60) says 4, 8 or 256, which SQLite,
/// Python and rusqlite read as UTF-8 (SQLite takes the field's low two bits, 0 meaning
/// UTF-8). Copied as they were, they left every pooled connection failing every statement
/// ("attached databases must use the same text encoding as main database"), later restores
/// included. Now the pool holds the data, the field as SQLite reads it, and stays usable.
#[test]
fn bytes_whose_encoding_field_sqlite_reads_as_utf8_load() {
    let dir = tempfile::tempdir().unwrap();
    let later = filled_pool(5, 10).get().unwrap().snapshot().unwrap();
    for (field, _, bytes) in common::odd_encoding_files(dir.path()) {
        common::assert_odd_encoding_loads(
            &format!("field {field}"),
            |conn, options| conn.restore_from_bytes_with(&bytes, options),
            |conn| conn.restore_from_bytes(&later),
        );
        let template = Template::from_bytes(&bytes).expect("template");
        let mut conn = template.connection().unwrap();
        assert_eq!(
            scalar(&mut conn, "SELECT count(*) AS n FROM words"),
            common::PYTHON_WORDS,
            "field {field}: template connection"
        );
        common::assert_holds_words(&template.pool().unwrap(), "template pool");
    }
}
