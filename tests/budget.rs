//! One time budget per call, restores that get through busy readers, cancellation, and the
//! small traps of the first hour (`schema("temp")`, a dangling link at the destination).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{app, filled_pool, notes_in_file, scalar, temp_files, LockHolder};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{
    memory_pool, shared_thread_pool, BackupError, BackupExt, BackupOptions, CancelToken,
    SingletonManager, TEMP_SUFFIX,
};

fn saved_database(dir: &Path, notes: usize) -> std::path::PathBuf {
    let path = dir.join("source.db");
    filled_pool(notes, 100)
        .get()
        .unwrap()
        .save_as(&path)
        .unwrap();
    path
}

/// A fresh connection to a file another process holds locked: its first read waits within
/// the budget, and the error names the file and the time really waited (it used to fail at
/// once, naming `:memory:`, with 0 ns).
#[test]
fn fresh_connection_to_a_locked_file_waits_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_database(dir.path(), 10);
    let _lock = LockHolder::lock(&path);
    let mut fresh = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    let pool = memory_pool().unwrap();
    let started = std::time::Instant::now();
    let err = fresh
        .backup_to(
            &mut pool.get().unwrap(),
            BackupOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert_busy_waited(&err, &path, started.elapsed());
}

/// `err` is Busy naming `path`, with a real wait no longer than the call's `elapsed` time.
fn assert_busy_waited(err: &BackupError, path: &std::path::Path, elapsed: Duration) {
    let BackupError::Busy {
        path: busy, waited, ..
    } = err
    else {
        panic!("expected Busy, got {err:?}");
    };
    assert_eq!(busy, path, "{err}");
    assert!(!waited.is_zero(), "did not wait: {err}");
    assert!(
        *waited <= elapsed,
        "waited {waited:?} > call time {elapsed:?}"
    );
}

/// Every phase of a restore draws on one budget: a file held locked by another process makes
/// the restore give up with Busy naming the file, and the time it reports waiting is within
/// the one budget (each phase used to get the whole timeout again).
#[test]
fn restore_of_a_locked_file_reports_the_file_and_the_time_waited() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_database(dir.path(), 10);
    let pool = filled_pool(3, 10);
    let _lock = LockHolder::lock(&path);
    let timeout = Duration::from_millis(400);
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(&path, BackupOptions::default().timeout(timeout))
        .unwrap_err();
    let BackupError::Busy {
        path: busy, waited, ..
    } = &err
    else {
        panic!("expected Busy, got {err:?}");
    };
    assert_eq!(busy, &path, "{err}");
    assert!(!waited.is_zero(), "{err}");
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 3, "data kept");
}

/// Three pooled connections scan the whole table in tight loops while five restores in a row
/// replace the database. Each restore must complete within a 5 s budget: the copy waits for
/// the readers inside SQLite's busy handler while holding RESERVED, which turns new readers
/// away. (Failing a step instead drops RESERVED, and overlapping readers keep it from ever
/// finding the database free.) The readers are busy with the full table before the first
/// timed restore starts, so the contention does not depend on thread start-up timing.
#[test]
fn restores_get_through_tight_loop_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_database(dir.path(), 20_000);
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .thread_pool(shared_thread_pool())
        .build(SingletonManager::new())
        .unwrap();
    let mut conn = pool.get().unwrap();
    conn.restore_from(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let scans = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (pool, stop, scans) = (pool.clone(), stop.clone(), scans.clone());
            std::thread::spawn(move || {
                let mut c = pool.get().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    // A busy answer (while a restore commits) is fine; keep reading.
                    if c.batch_execute("SELECT sum(length(body)) FROM notes")
                        .is_ok()
                    {
                        scans.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while scans.load(Ordering::Relaxed) < 30 {
        std::thread::yield_now();
    }
    for round in 0..5 {
        conn.restore_from_with(
            &path,
            BackupOptions::default().timeout(Duration::from_secs(5)),
        )
        .unwrap_or_else(|e| panic!("restore {round} did not get through: {e}"));
        assert_eq!(app::note_count(&mut conn), 20_000);
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
}

/// Cancelling a restore from its progress callback keeps the old data.
#[test]
fn cancelled_restore_keeps_the_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_database(dir.path(), 2_000);
    let pool = filled_pool(7, 10);
    let token = CancelToken::new();
    let in_callback = token.clone();
    let options = BackupOptions::default()
        .pages_per_step(1)
        .cancel_token(&token)
        .on_progress(move |_| in_callback.cancel());
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(&path, options)
        .unwrap_err();
    assert!(matches!(err, BackupError::Cancelled { .. }), "{err:?}");
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 7);
}

/// Cancelling a save from another thread leaves the old file and no temporary file.
#[test]
fn cancelled_save_leaves_the_old_file_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("doc.db");
    filled_pool(5, 10).get().unwrap().save_as(&dest).unwrap();
    let pool = filled_pool(5_000, 200);
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || token.cancel())
    };
    canceller.join().unwrap();
    let err = pool
        .get()
        .unwrap()
        .save_as_with(&dest, BackupOptions::default().cancel_token(&token))
        .unwrap_err();
    assert!(matches!(err, BackupError::Cancelled { .. }), "{err:?}");
    assert_eq!(notes_in_file(&dest), 5);
    assert!(
        common::temp_files(dir.path()).is_empty(),
        "{TEMP_SUFFIX} left"
    );
}

/// `schema("temp")` works before anything used the temp schema.
#[test]
fn temp_schema_can_be_saved_before_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("temp.db");
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.save_as_with(&dest, BackupOptions::default().schema("temp"))
        .unwrap();
    let mut file = SqliteConnection::establish(dest.to_str().unwrap()).unwrap();
    assert_eq!(
        scalar(&mut file, "SELECT count(*) AS n FROM sqlite_schema"),
        0
    );
}

/// A dangling symbolic link at the destination gets its target created; the link stays.
#[cfg(unix)]
#[test]
fn dangling_link_gets_its_target_created() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink("real.db", &link).unwrap();
    filled_pool(4, 10).get().unwrap().save_as(&link).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(notes_in_file(&target), 4);
}

/// A save over a file whose `-journal` another process's open write transaction is using
/// (Python: `BEGIN IMMEDIATE; INSERT`) waits for that writer within the budget, as every
/// other lock wait does. It used to fail at once, saying it "gave up after 0ns": now, with
/// 1 s, it gives up with Busy naming the file and `waited` the time really waited, and when
/// the writer commits within the budget the save goes through.
#[test]
fn save_over_a_file_whose_journal_is_in_use_waits_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_database(dir.path(), 10);
    let pool = filled_pool(3, 10);
    let holder = LockHolder::hold(
        &path,
        "BEGIN IMMEDIATE",
        "INSERT INTO notebooks(title) VALUES ('uncommitted')",
    );
    let journal = dir.path().join("source.db-journal");
    assert!(journal.exists(), "set-up: the writer has no journal");
    let started = std::time::Instant::now();
    let err = pool
        .get()
        .unwrap()
        .save_as_with(
            &path,
            BackupOptions::default().timeout(Duration::from_secs(1)),
        )
        .unwrap_err();
    assert_busy_waited(&err, &path, started.elapsed());
    assert_eq!(notes_in_file(&path), 10, "the old file was replaced");
    assert!(temp_files(dir.path()).is_empty());

    // The writer commits while the save waits for it (a generous budget: the wait is short).
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        holder.commit();
    });
    pool.get()
        .unwrap()
        .save_as_with(
            &path,
            BackupOptions::default().timeout(Duration::from_secs(120)),
        )
        .unwrap();
    committer.join().unwrap();
    assert_eq!(notes_in_file(&path), 3);
    assert!(!journal.exists());
}
