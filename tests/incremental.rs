//! Incremental saves (`BackupOptions::incremental`): only changed pages are written, the file
//! always equals memory afterwards, anything doubtful falls back to a full save, readers never
//! see a torn file, and a kill at any moment leaves a file any SQLite recovers.
//!
//! Set `DSB_LONG=1` for the long crash mode (2,000 kills).

#[allow(dead_code)]
#[path = "wild/py.rs"]
mod py;
#[allow(dead_code)]
#[path = "wild/scripts.rs"]
mod scripts;
#[path = "incremental/support.rs"]
mod support;

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt};
use support::*;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = ledger(2000);
    pool.get().unwrap().save_as(&path).unwrap();
    let ino = inode(&path);
    transfer(&mut pool.get().unwrap(), 2000, 1.0, 1);
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    assert_eq!(inode(&path), ino);
    assert_file_equals_memory(&pool, &path, "smoke");
}
