//! Restores of a file into a pool while the pool's database is saved over that file in place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{
    shared_thread_pool, BackupError, BackupExt, BackupOptions, SingletonManager,
};

use crate::support::*;

const ROUNDS: usize = 12;

/// Each call's budget: far more than one save or restore of this file needs. A call that
/// waits for a lock the other call holds while that one waits for it waits out all of it.
const BUDGET: Duration = Duration::from_secs(20);

/// One thread restores the file into the pool again and again; another saves the pool's
/// database over the file in place again and again, each save starting while a restore
/// reads the file. Every call gets through. The saves are full ones (a plain memdb
/// connection reaches the pool's database without its write record, so every save it makes
/// in incremental mode is the full save in place).
#[test]
fn restores_and_full_saves_in_place_of_one_file_both_get_through() {
    restores_and_saves(true);
}

/// As above with saves through the pool, incremental or full as the record allows.
#[test]
fn restores_and_saves_in_place_of_one_file_both_get_through() {
    restores_and_saves(false);
}

fn restores_and_saves(plain_saver: bool) {
    let manager = SingletonManager::new();
    let plain_uri = manager
        .uri()
        .replace("vfs=diesel-sqlite-backup-memdb", "vfs=memdb");
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .thread_pool(shared_thread_pool())
        .build(manager)
        .unwrap();
    fill_ledger(&pool, 5_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    pool.get().unwrap().save_as(&path).unwrap();
    let (mut plain, mut pooled) = (
        SqliteConnection::establish(&plain_uri).unwrap(),
        pool.get().unwrap(),
    );
    let saver: &mut SqliteConnection = if plain_saver { &mut plain } else { &mut pooled };
    let mut probe = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    let (failed, restores_done) = (AtomicBool::new(false), AtomicBool::new(false));
    let (restored, saved) = std::thread::scope(|s| {
        let restores = s.spawn(|| {
            let mut conn = pool.get().unwrap();
            // The integrity check holds the file's read lock a while before the copy.
            let options = || {
                BackupOptions::default()
                    .timeout(BUDGET)
                    .verify_integrity(true)
            };
            let result = repeat(&failed, || conn.restore_from_with(&path, options()));
            restores_done.store(true, Ordering::Relaxed);
            result
        });
        let saves = s.spawn(|| {
            let options = || BackupOptions::default().timeout(BUDGET).incremental(true);
            repeat(&failed, || {
                let waiting =
                    || !failed.load(Ordering::Relaxed) && !restores_done.load(Ordering::Relaxed);
                while waiting() && !is_locked(&mut probe) {
                    std::thread::sleep(Duration::from_micros(100));
                }
                saver.save_as_with(&path, options())
            })
        });
        (restores.join().unwrap(), saves.join().unwrap())
    });
    restored.expect("a restore");
    saved.expect("a save in place");
    drop(pooled);
    assert_file_equals_memory(&pool, &path, "after the last save");
    assert!(
        !dir.path().join("doc.db-journal").exists(),
        "a journal was left"
    );
}

/// Runs `call` [`ROUNDS`] times, or until a call here or in another thread fails.
fn repeat(
    failed: &AtomicBool,
    mut call: impl FnMut() -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    for _ in 0..ROUNDS {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        if let Err(e) = call() {
            failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
    }
    Ok(())
}

/// True when another connection holds a lock on `probe`'s file: its `BEGIN EXCLUSIVE`,
/// which gives up at once, fails.
fn is_locked(probe: &mut SqliteConnection) -> bool {
    probe.batch_execute("BEGIN EXCLUSIVE; COMMIT;").is_err()
}
