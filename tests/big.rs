//! An in-memory database past memdb's default 1 GiB cap saves and restores correctly.

mod common;

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions};

/// Grows a pool's database to about 1.1 GiB (memdb refuses to pass 1 GiB unless the cap is
/// lifted), saves it, restores it into a second pool, and checks both copies.
#[test]
fn database_past_one_gib_saves_and_restores() {
    let pool = memory_pool().unwrap();
    let mut c = pool.get().unwrap();
    // 1.1 GiB of 64 KiB blobs.
    c.batch_execute(
        "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 17600)
         INSERT INTO blobs SELECT i, randomblob(65536) FROM n;",
    )
    .unwrap();
    let bytes = common::scalar(
        &mut c,
        "SELECT page_count * page_size AS n FROM pragma_page_count, pragma_page_size",
    );
    assert!(bytes > 1 << 30, "only {bytes} bytes");
    let sum = common::scalar(&mut c, "SELECT sum(length(data)) AS n FROM blobs");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.db");
    c.save_as(&file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len() as i64, bytes);

    let restored = memory_pool().unwrap();
    let mut r = restored.get().unwrap();
    r.restore_from_with(&file, BackupOptions::default().verify_integrity(true))
        .unwrap();
    assert_eq!(
        common::scalar(&mut r, "SELECT sum(length(data)) AS n FROM blobs"),
        sum
    );
    assert_eq!(
        common::scalar(&mut r, "SELECT count(*) AS n FROM blobs"),
        17_600
    );
}
