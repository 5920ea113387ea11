//! The hard parts of an online backup: busy locks and the deadline, restarts under
//! concurrent writers, progress reporting, finishing after BUSY, destinations in use.

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use common::{app, filled_pool, integrity, notes_in_file, LockHolder, Pool};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{
    Backup, BackupError, BackupExt, BackupOptions, BusyReason, SingletonManager, StepResult,
};

/// Pooled connections wait up to this long for a lock on their own: a call that ignored its
/// deadline would wait this out, so the tests can tell it apart from one that kept it
/// without measuring anything finer than a minute.
const POOL_BUSY_TIMEOUT: Duration = Duration::from_secs(120);
const FAR_PAST_THE_DEADLINE: Duration = Duration::from_secs(60);

fn pool_of(size: u32) -> Pool {
    let pool = r2d2::Pool::builder()
        .max_size(size)
        .build(SingletonManager::new().busy_timeout(POOL_BUSY_TIMEOUT))
        .unwrap();
    let mut c = pool.get().unwrap();
    app::migrate(&mut c);
    app::fill(&mut c, "base", 2_000, 200);
    drop(c);
    pool
}

/// Opens a write transaction on `conn` (uncommitted row `title`), locking out other
/// connections until it commits or rolls back.
fn hold_write_lock(conn: &mut diesel::SqliteConnection, title: &str) {
    conn.batch_execute(&format!(
        "BEGIN IMMEDIATE; INSERT INTO notebooks(title) VALUES ('{title}');"
    ))
    .unwrap();
}

/// A writer holds its transaction: save_as waits with backoff and gives up at the deadline
/// with a Busy error, long before the pool's busy timeout would have let it.
#[test]
fn save_gives_up_at_the_deadline_while_a_writer_holds_the_lock() {
    let pool = pool_of(2);
    let (mut writer, mut saver) = (pool.get().unwrap(), pool.get().unwrap());
    hold_write_lock(&mut writer, "w");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = saver
        .save_as_with(
            dir.path().join("b.db"),
            BackupOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, BackupError::Busy { .. }), "{err}");
    assert_eq!(err.code(), Some(5), "keeps SQLITE_BUSY");
    assert!(
        waited >= Duration::from_millis(300),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < FAR_PAST_THE_DEADLINE,
        "ignored the deadline: {waited:?}"
    );
    writer.batch_execute("ROLLBACK").unwrap();
}

/// When the writer commits before the deadline, the waiting save completes.
#[test]
fn save_waits_for_a_writer_that_commits_before_the_deadline() {
    let pool = pool_of(2);
    let (mut writer, mut saver) = (pool.get().unwrap(), pool.get().unwrap());
    hold_write_lock(&mut writer, "late");
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        writer.batch_execute("COMMIT").unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.db");
    saver
        .save_as_with(
            &file,
            BackupOptions::default().timeout(Duration::from_secs(20)),
        )
        .unwrap();
    committer.join().unwrap();
    assert_eq!(notes_in_file(&file), 2_000);
}

/// restore_from also waits at most until the deadline and leaves the data as it was.
#[test]
fn restore_gives_up_at_the_deadline_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.db");
    filled_pool(5, 5).get().unwrap().save_as(&file).unwrap();
    let pool = pool_of(2);
    let (mut writer, mut restorer) = (pool.get().unwrap(), pool.get().unwrap());
    hold_write_lock(&mut writer, "w");
    let started = Instant::now();
    let err = restorer
        .restore_from_with(
            &file,
            BackupOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(
        started.elapsed() < FAR_PAST_THE_DEADLINE,
        "ignored the deadline"
    );
    writer.batch_execute("ROLLBACK").unwrap();
    assert_eq!(app::note_count(&mut restorer), 2_000);
}

/// Another connection writes between every pair of steps, so every step restarts the copy.
/// The engine notices `remaining` not shrinking, finishes in one step, and saves a consistent
/// snapshot well before the deadline.
#[test]
fn save_finishes_although_a_writer_restarts_it_after_every_step() {
    let pool = pool_of(2);
    let (mut saver, mut writer) = (pool.get().unwrap(), pool.get().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("restarted.db");
    let restarts = Cell::new(0);
    let last = Cell::new(u32::MAX);
    let writes = Cell::new(0);
    saver
        .save_as_with(
            &file,
            BackupOptions::default()
                .pages_per_step(20)
                .timeout(Duration::from_secs(30))
                .on_progress(|p| {
                    if p.remaining >= last.get() {
                        restarts.set(restarts.get() + 1);
                    }
                    last.set(p.remaining);
                    if p.remaining > 0 {
                        writer
                            .batch_execute(
                                "INSERT INTO notebooks(title) VALUES (hex(randomblob(8)))",
                            )
                            .unwrap();
                        writes.set(writes.get() + 1);
                    }
                }),
        )
        .unwrap();
    assert!(restarts.get() >= 1, "the test never restarted the backup");
    assert!(
        writes.get() < 50,
        "kept stepping after restarts: {} writes",
        writes.get()
    );
    assert_eq!(integrity(&file), "ok");
    assert_eq!(notes_in_file(&file), 2_000);
}

/// With no time left when a writer restarts the copy, the save gives up as Busy with the
/// crate's own reason and no SQLite code (SQLite reported none), and writes no file.
#[test]
fn a_copy_restarted_after_its_deadline_is_busy_because_the_source_kept_changing() {
    let pool = pool_of(2);
    let (mut saver, mut writer) = (pool.get().unwrap(), pool.get().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("restarted.db");
    let err = saver
        .save_as_with(
            &file,
            BackupOptions::default()
                .pages_per_step(20)
                .timeout(Duration::ZERO)
                .on_progress(|p| {
                    if p.remaining > 0 {
                        writer
                            .batch_execute(
                                "INSERT INTO notebooks(title) VALUES (hex(randomblob(8)))",
                            )
                            .unwrap();
                    }
                }),
        )
        .unwrap_err();
    let BackupError::Busy { reason, .. } = &err else {
        panic!("expected Busy, got {err:?}");
    };
    assert_eq!(*reason, BusyReason::SourceKeptChanging, "{err}");
    assert_eq!(err.code(), None, "SQLite reported no code: {err}");
    assert!(err.to_string().contains("kept changing"), "{err}");
    assert!(!file.exists(), "a file was left");
    // One error for many receivers: it clones.
    assert_eq!(err.clone().to_string(), err.to_string());
}

/// Writer threads run flat out while saves run: every save finishes before its deadline and
/// is a consistent snapshot.
#[test]
fn saves_complete_under_continuous_writer_threads() {
    let pool = pool_of(4);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let pool = pool.clone();
            let stop = &stop;
            s.spawn(move || {
                let mut c = pool.get().unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ =
                        c.batch_execute("INSERT INTO notebooks(title) VALUES (hex(randomblob(8)))");
                }
            });
        }
        let mut saver = pool.get().unwrap();
        for i in 0..5 {
            let file = dir.path().join(format!("snap{i}.db"));
            saver
                .save_as_with(
                    &file,
                    BackupOptions::default()
                        .pages_per_step(50)
                        .pause(Duration::from_micros(200))
                        .timeout(Duration::from_secs(30)),
                )
                .unwrap();
            assert_eq!(integrity(&file), "ok");
            assert_eq!(notes_in_file(&file), 2_000);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// With one page per step: a callback after every step, remaining within page_count,
/// never growing while nobody writes, and 0 on the last call.
#[test]
fn progress_is_reported_after_every_step() {
    let pool = pool_of(1);
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    pool.get()
        .unwrap()
        .save_as_with(
            dir.path().join("p.db"),
            BackupOptions::default()
                .pages_per_step(1)
                .on_progress(|p| seen.push(p)),
        )
        .unwrap();
    let pages = seen[0].page_count;
    assert!(
        pages > 100,
        "database too small to show stepping: {pages} pages"
    );
    assert_eq!(seen.len() as u32, pages, "one callback per one-page step");
    assert!(seen.iter().all(|p| p.remaining <= p.page_count));
    assert!(seen.windows(2).all(|w| w[1].remaining <= w[0].remaining));
    assert_eq!(seen.last().unwrap().remaining, 0);
}

/// A hand-driven Backup whose step returned Busy finishes cleanly (sqlite3_backup_finish
/// repeats BUSY, which is not a new failure), and both connections then close without the
/// panic Diesel raises when sqlite3_close fails.
#[test]
fn finish_after_busy_is_clean() {
    let pool = pool_of(2);
    let (mut writer, mut src) = (pool.get().unwrap(), pool.get().unwrap());
    hold_write_lock(&mut writer, "w");
    src.batch_execute("PRAGMA busy_timeout = 0").unwrap();
    let mut dst = SqliteConnection::establish(":memory:").unwrap();
    let mut backup = Backup::new(&mut src, &mut dst).unwrap();
    assert_eq!(backup.step(10).unwrap(), StepResult::Busy);
    backup.finish().unwrap();

    // The same after a busy step, but dropped instead of finished.
    let mut backup = Backup::new(&mut src, &mut dst).unwrap();
    assert_eq!(backup.step(10).unwrap(), StepResult::Busy);
    drop(backup);
    writer.batch_execute("ROLLBACK").unwrap();

    let mut backup = Backup::new(&mut src, &mut dst).unwrap();
    while backup.step(100).unwrap() != StepResult::Done {}
    backup.finish().unwrap();
    assert_eq!(app::note_count(&mut dst), 2_000);
    drop(dst);
    drop(src);
}

/// backup_to: a destination with its own open transaction is refused at once; one that
/// another connection keeps locked fails with Busy at the deadline instead of hanging.
#[test]
fn backup_to_a_destination_in_use() {
    let pool = pool_of(1);
    let mut src = pool.get().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("shared.db");
    let mut dest = SqliteConnection::establish(target.to_str().unwrap()).unwrap();
    dest.batch_execute("CREATE TABLE other(x); BEGIN; SELECT * FROM other;")
        .unwrap();
    let err = src
        .backup_to(&mut dest, BackupOptions::default())
        .unwrap_err();
    assert!(matches!(err, BackupError::DestinationInUse { .. }), "{err}");
    dest.batch_execute("COMMIT").unwrap();

    let mut holder = SqliteConnection::establish(target.to_str().unwrap()).unwrap();
    holder
        .batch_execute("BEGIN IMMEDIATE; INSERT INTO other VALUES (1);")
        .unwrap();
    let started = Instant::now();
    let err = src
        .backup_to(
            &mut dest,
            BackupOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert!(err.is_busy(), "{err}");
    // The holder keeps its lock until after the call: ignoring the deadline would hang.
    assert!(
        started.elapsed() < FAR_PAST_THE_DEADLINE,
        "ignored the deadline"
    );
    holder.batch_execute("ROLLBACK").unwrap();

    src.backup_to(&mut dest, BackupOptions::default()).unwrap();
    assert_eq!(app::note_count(&mut dest), 2_000);
}

/// A copy between two connections of one pool could only wait for itself until the
/// deadline: it is refused with `SameFile` before anything is written. A copy into a
/// different database still works, also when a path now names another file than the one a
/// connection holds (a false match there was found by the review).
#[test]
fn a_copy_onto_its_own_database_is_refused() {
    let manager = SingletonManager::new().busy_timeout(POOL_BUSY_TIMEOUT);
    let plain_memdb = manager
        .uri()
        .replace("vfs=diesel-sqlite-backup-memdb", "vfs=memdb");
    assert_ne!(plain_memdb, manager.uri(), "the pool's URI names its VFS");
    let pool = r2d2::Pool::builder().max_size(2).build(manager).unwrap();
    app::migrate(&mut pool.get().unwrap());
    app::fill(&mut pool.get().unwrap(), "base", 500, 100);
    let (mut a, mut b) = (pool.get().unwrap(), pool.get().unwrap());
    // Without the check, the budget runs out and the error is Busy instead.
    let opts = || BackupOptions::default().timeout(Duration::from_secs(5));
    let err = a.backup_to(&mut b, opts()).unwrap_err();
    assert!(matches!(err, BackupError::SameFile { .. }), "{err}");
    let err = Backup::new(&mut a, &mut b).err().expect("refused");
    assert!(matches!(err, BackupError::SameFile { .. }), "{err}");
    // A plain-memdb connection to it has no name SQLite will tell (README: use `uri()`):
    // the copy cannot be recognised, and waits out its budget instead of hanging.
    let mut bypass = SqliteConnection::establish(&plain_memdb).unwrap();
    assert_eq!(app::note_count(&mut bypass), 500, "the same database");
    let err = a
        .backup_to(
            &mut bypass,
            BackupOptions::default().timeout(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(err.is_busy(), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.db");
    a.save_as(&file).unwrap();
    let mut first = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    let other_name = dir.path().join(".").join("one.db");
    let mut second = SqliteConnection::establish(other_name.to_str().unwrap()).unwrap();
    // Files are not compared by path (a connection may hold a file since renamed over):
    // two connections to one file wait out the budget instead.
    let err = first
        .backup_to(
            &mut second,
            BackupOptions::default().timeout(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert_eq!(integrity(&file), "ok");

    // A connection on a file that was renamed over holds another database than the path's.
    let newer = dir.path().join("newer.db");
    fresh_pool_save(&newer);
    std::fs::rename(&newer, &file).unwrap();
    let mut on_new = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    first.backup_to(&mut on_new, opts()).unwrap();
    assert_eq!(app::note_count(&mut on_new), 500, "the old file's rows");

    // Distinct databases still copy: the file into a fresh pool.
    let fresh = pool_of(1);
    first.backup_to(&mut fresh.get().unwrap(), opts()).unwrap();
    assert_eq!(app::note_count(&mut fresh.get().unwrap()), 500);
}

/// Saves another database (2,000 notes) to `path`.
fn fresh_pool_save(path: &std::path::Path) {
    pool_of(1).get().unwrap().save_as(path).unwrap();
}

/// `Backup::new` into a file another process holds locked (`BEGIN EXCLUSIVE`) comes back at
/// once, as `sqlite3_backup_init` does, and `step` reports `StepResult::Busy` while the lock
/// is held, as its documentation says. It used to wait inside `new` for the default budget
/// (30 s, which its caller cannot change) and then fail. Once the lock is gone, the same
/// handle copies everything.
#[test]
fn stepped_backup_into_a_file_another_process_locks_is_busy_at_step() {
    let pool = pool_of(1);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.db");
    let holder = LockHolder::lock(&target);
    let mut src = pool.get().unwrap();
    let mut dst = SqliteConnection::establish(target.to_str().unwrap()).unwrap();
    let mut backup = Backup::new(&mut src, &mut dst).unwrap();
    for _ in 0..3 {
        assert_eq!(backup.step(100).unwrap(), StepResult::Busy);
    }
    holder.commit();
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "never finished");
        match backup.step(100).unwrap() {
            StepResult::Done => break,
            StepResult::More => {}
            StepResult::Busy => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    backup.finish().unwrap();
    drop(dst);
    assert_eq!(notes_in_file(&target), 2_000);
}
