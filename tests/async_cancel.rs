//! `AsyncBackupExt` futures dropped mid-call (feature `async`): a dropped `save_as` leaves the
//! old file byte for byte and no temporary file, a dropped `restore_from` the old data, and
//! the connection goes back to its pool usable and outside any transaction; a runtime shut
//! down mid-call panics nowhere and tears no file. Progress callbacks work across the
//! blocking pool.
#![cfg(feature = "async")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{integrity, scalar, temp_files};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool;
use diesel_async::SimpleAsyncConnection;
use diesel_sqlite_backup::{
    AsyncBackupExt, AsyncSqliteConnection, BackupOptions, CancelToken, MemoryDatabase,
};

type Pool = deadpool::Pool<AsyncSqliteConnection>;

const MIB: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A database of about `mib` MiB (rows of 4 KiB) with a one-row `marker` table holding `tag`.
fn big_database(mib: usize, tag: i64) -> MemoryDatabase {
    let db = MemoryDatabase::new().unwrap();
    db.connect()
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE marker(tag INTEGER);
             INSERT INTO marker VALUES ({tag});
             CREATE TABLE big(id INTEGER PRIMARY KEY, pad BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows})
             INSERT INTO big SELECT i, randomblob(4000) FROM n;",
            rows = mib * MIB / 4096
        ))
        .unwrap();
    db
}

fn tag_of(conn: &mut SqliteConnection) -> i64 {
    scalar(conn, "SELECT tag AS n FROM marker")
}

fn tag_in_file(path: &Path) -> i64 {
    tag_of(&mut SqliteConnection::establish(path.to_str().unwrap()).unwrap())
}

/// A one-connection pool, so the next checkout is the connection the dropped call used;
/// a TEMP table (private to a connection) tells it is the same one.
async fn one_connection_pool(db: &MemoryDatabase) -> Pool {
    let pool = deadpool::Pool::builder(db.async_manager())
        .max_size(1)
        .build()
        .unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TEMP TABLE mine(x)")
        .await
        .unwrap();
    pool
}

/// The next checkout is the same connection, it answers a `SELECT`, and no transaction is
/// open on it (`BEGIN` would fail inside one).
async fn assert_same_connection_usable(pool: &Pool, what: &str) {
    let mut conn = pool.get().await.unwrap();
    conn.batch_execute("SELECT count(*) FROM mine; SELECT tag FROM marker")
        .await
        .unwrap_or_else(|e| panic!("{what}: not the same connection, or unusable: {e}"));
    conn.batch_execute("BEGIN; COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{what}: a transaction was left open: {e}"));
}

/// Deadlines for 50 dropped calls: every 200 µs over the first 8 ms (before the task starts,
/// as it opens the file, early in the copy), then through the whole of a call that took
/// `full`.
fn deadlines(full: Duration) -> Vec<Duration> {
    let mut d: Vec<Duration> = (0..40).map(|k| Duration::from_micros(200 * k)).collect();
    d.extend((1..=10).map(|k| full * k / 11));
    d
}

/// How long a held call waits for its cancellation before it goes on (a bound on a broken
/// build, which never cancels; a working one cancels within milliseconds).
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Options whose progress callback, at its `hold_at`-th call, waits until `token` is
/// cancelled: the call cannot finish unless its dropped future cancels it, so a test knows
/// the outcome without relying on timing. `pages_per_step(256)`: 100 steps for 100 MiB.
/// `keep` is dropped with the options, so when the blocking task ends.
fn held_at(
    hold_at: u32,
    token: &CancelToken,
    keep: Arc<()>,
) -> impl FnOnce() -> BackupOptions<'static> + Send + 'static {
    let token = token.clone();
    move || {
        let watched = token.clone();
        let mut calls = 0;
        BackupOptions::default()
            .pages_per_step(256)
            .cancel_token(&token)
            .on_progress(move |_| {
                let _ = &keep;
                calls += 1;
                if calls == hold_at {
                    let start = Instant::now();
                    while !watched.is_cancelled() && start.elapsed() < HANG_GUARD {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
    }
}

/// `save_as` futures dropped by `timeout` at 50 points of the copy (held there until
/// cancelled, so the outcome does not depend on timing): each time the old file is intact
/// byte for byte, no temporary file remains, and the same connection comes back usable with
/// no transaction. Then 50 plain `save_as` calls under tiny deadlines: the old file, or
/// the complete new one when the call finished before the drop.
#[test]
fn a_dropped_save_keeps_the_old_file() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.db");
        let db = big_database(100, 0);
        let pool = one_connection_pool(&db).await;
        let started = Instant::now();
        pool.get().await.unwrap().save_as(&path).await.unwrap();
        let full = started.elapsed();
        let mut old = std::fs::read(&path).unwrap();
        for i in 0..50u32 {
            let mut conn = pool.get().await.unwrap();
            conn.batch_execute(&format!("UPDATE marker SET tag = {}", 1000 + i))
                .await
                .unwrap();
            let token = CancelToken::new();
            let call = conn.save_as_with(&path, held_at(1 + 2 * i, &token, Arc::default()));
            let outcome = tokio::time::timeout(Duration::from_millis(2), call).await;
            assert!(
                outcome.is_err(),
                "held try {i}: the call cannot finish uncancelled"
            );
            assert!(
                token.is_cancelled(),
                "held try {i}: the drop cancels the token"
            );
            assert!(
                std::fs::read(&path).unwrap() == old,
                "held try {i}: old file changed"
            );
            assert_eq!(
                temp_files(dir.path()),
                Vec::<std::path::PathBuf>::new(),
                "held try {i}"
            );
            drop(conn);
            assert_same_connection_usable(&pool, &format!("held save try {i}")).await;
        }
        let (mut kept, mut finished) = (0, 0);
        for (i, deadline) in deadlines(full).into_iter().enumerate() {
            let tag = i as i64 + 1;
            let mut conn = pool.get().await.unwrap();
            conn.batch_execute(&format!("UPDATE marker SET tag = {tag}"))
                .await
                .unwrap();
            let outcome = tokio::time::timeout(deadline, conn.save_as(&path)).await;
            // The drop has returned: the blocking task has ended.
            assert_eq!(
                temp_files(dir.path()),
                Vec::<std::path::PathBuf>::new(),
                "try {i}"
            );
            match outcome {
                Err(_elapsed) => {
                    let now = std::fs::read(&path).unwrap();
                    if now == old {
                        kept += 1;
                    } else {
                        // Cancelled after the rename: the call had finished.
                        assert_eq!(tag_in_file(&path), tag, "try {i}: neither old nor new");
                        assert_eq!(integrity(&path), "ok", "try {i}");
                        old = now;
                        finished += 1;
                    }
                }
                Ok(result) => {
                    result.unwrap();
                    assert_eq!(tag_in_file(&path), tag);
                    old = std::fs::read(&path).unwrap();
                    finished += 1;
                }
            }
            drop(conn);
            assert_same_connection_usable(&pool, &format!("save try {i}")).await;
        }
        eprintln!("{kept} dropped saves kept the old file, {finished} finished first");
        assert_eq!(kept + finished, 50);
    });
}

/// `restore_from` futures dropped at 50 points of the copy (held there until cancelled): the
/// database keeps its old data, and the same connection comes back usable with no
/// transaction. Then 50 plain `restore_from` calls under tiny deadlines: the old data unless
/// the call finished before the drop.
#[test]
fn a_dropped_restore_keeps_the_old_data() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        {
            let source = big_database(100, -1);
            let mut c = source.connect().unwrap();
            diesel_sqlite_backup::BackupExt::save_as(&mut c, &other).unwrap();
        }
        let db = big_database(100, 7);
        let pool = one_connection_pool(&db).await;
        let mut reader = db.connect().unwrap();
        let rows_before = scalar(&mut reader, "SELECT count(*) AS n FROM big");
        let sum_before = scalar(&mut reader, "SELECT sum(length(pad)) AS n FROM big");
        let own = dir.path().join("own.db");
        pool.get().await.unwrap().save_as(&own).await.unwrap();
        let started = Instant::now();
        {
            // One full restore and back, to time it.
            let mut conn = pool.get().await.unwrap();
            conn.restore_from(&other).await.unwrap();
            assert_eq!(tag_of(&mut reader), -1);
            conn.restore_from(&own).await.unwrap();
        }
        let full = started.elapsed() / 2;
        let unchanged = |reader: &mut SqliteConnection, what: &str| {
            assert_eq!(tag_of(reader), 7, "{what}");
            assert_eq!(
                scalar(reader, "SELECT count(*) AS n FROM big"),
                rows_before,
                "{what}"
            );
            assert_eq!(
                scalar(reader, "SELECT sum(length(pad)) AS n FROM big"),
                sum_before,
                "{what}"
            );
        };
        for i in 0..50u32 {
            let mut conn = pool.get().await.unwrap();
            let token = CancelToken::new();
            let call = conn.restore_from_with(&other, held_at(1 + 2 * i, &token, Arc::default()));
            let outcome = tokio::time::timeout(Duration::from_millis(2), call).await;
            assert!(
                outcome.is_err(),
                "held try {i}: the call cannot finish uncancelled"
            );
            assert!(
                token.is_cancelled(),
                "held try {i}: the drop cancels the token"
            );
            unchanged(&mut reader, &format!("held try {i}"));
            drop(conn);
            assert_same_connection_usable(&pool, &format!("held restore try {i}")).await;
        }
        let (mut kept, mut finished) = (0, 0);
        for (i, deadline) in deadlines(full).into_iter().enumerate() {
            let mut conn = pool.get().await.unwrap();
            let outcome = tokio::time::timeout(deadline, conn.restore_from(&other)).await;
            let done = match outcome {
                Err(_elapsed) => tag_of(&mut reader) == -1,
                Ok(result) => {
                    result.unwrap();
                    true
                }
            };
            if done {
                finished += 1;
                conn.restore_from(&own).await.unwrap();
            } else {
                kept += 1;
            }
            assert_eq!(tag_of(&mut reader), 7, "try {i}");
            assert_eq!(
                scalar(&mut reader, "SELECT count(*) AS n FROM big"),
                rows_before
            );
            assert_eq!(
                scalar(&mut reader, "SELECT sum(length(pad)) AS n FROM big"),
                sum_before
            );
            drop(conn);
            assert_same_connection_usable(&pool, &format!("restore try {i}")).await;
        }
        eprintln!("{kept} dropped restores kept the old data, {finished} finished first");
        assert_eq!(
            common::integrity_of(&mut reader),
            "ok",
            "the database after 50 dropped restores"
        );
    });
}

/// Progress reaches a callback made on the blocking thread, ending at zero, for a save and
/// a restore; the other async calls work end to end.
#[test]
fn progress_and_every_call_work() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let db = big_database(2, 3);
        let pool = one_connection_pool(&db).await;
        let mut conn = pool.get().await.unwrap();
        for restore in [false, true] {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let options = move || {
                BackupOptions::default()
                    .pages_per_step(16)
                    .on_progress(move |p| tx.send(p.remaining).unwrap())
            };
            if restore {
                conn.restore_from_with(&path, options).await.unwrap();
            } else {
                conn.save_as_with(&path, options).await.unwrap();
            }
            let mut seen = Vec::new();
            while let Some(r) = rx.recv().await {
                seen.push(r);
            }
            assert!(seen.len() > 1, "{seen:?}");
            assert_eq!(seen.last(), Some(&0));
        }
        let snapshot = conn.snapshot().await.unwrap();
        let copy = MemoryDatabase::new().unwrap();
        let copies = one_connection_pool(&copy).await;
        copies
            .get()
            .await
            .unwrap()
            .restore_from_bytes(snapshot.clone())
            .await
            .unwrap();
        assert_eq!(tag_of(&mut copy.connect().unwrap()), 3);
        let again = copies
            .get()
            .await
            .unwrap()
            .snapshot_with(|| BackupOptions::default().pages_per_step(4))
            .await
            .unwrap();
        assert_eq!(again.len(), snapshot.len());
        copies
            .get()
            .await
            .unwrap()
            .restore_from_bytes_with(again.into_vec(), BackupOptions::default)
            .await
            .unwrap();
        // Like an `async fn`, a call does nothing until polled.
        let made = Arc::new(AtomicBool::new(false));
        let never_polled = conn.save_as_with(dir.path().join("never.db"), {
            let made = made.clone();
            move || {
                made.store(true, Ordering::SeqCst);
                BackupOptions::default()
            }
        });
        drop(never_polled);
        assert!(!made.load(Ordering::SeqCst), "an unpolled call ran");
        assert!(!dir.path().join("never.db").exists());
        // A failed call reports the crate's error, with the path.
        let missing = dir.path().join("missing.db");
        let err = conn.restore_from(&missing).await.unwrap_err();
        assert!(err.to_string().contains("missing.db"), "{err}");
    });
}

/// Runs `call` on a fresh runtime's task with a one-connection pool of `db`, shuts the
/// runtime down (`shutdown_timeout`) while the call is held, and returns once the call's
/// blocking task has ended (`alive`, moved into the call's options, is dropped with them).
fn shut_down_mid_call<F, Fut>(db: &MemoryDatabase, call: F)
where
    F: FnOnce(deadpool::Object<AsyncSqliteConnection>, Arc<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let alive = Arc::new(());
    let rt = runtime();
    let pool: Pool = deadpool::Pool::builder(db.async_manager())
        .max_size(1)
        .build()
        .unwrap();
    let keep = alive.clone();
    rt.spawn(async move { call(pool.get().await.unwrap(), keep).await });
    // Let the call start and reach its hold (or not: then it never starts).
    std::thread::sleep(Duration::from_millis(20));
    rt.shutdown_timeout(Duration::from_millis(1));
    let guard = Instant::now();
    while Arc::strong_count(&alive) > 1 {
        assert!(guard.elapsed() < HANG_GUARD * 2, "the call never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runtimes shut down while a save or a restore runs, at several points of the copy (held
/// there until cancelled), in a child process: no panic anywhere, and once each blocking
/// task has ended the file is the old one byte for byte, with no temporary file left, and a
/// restored database keeps its data.
#[test]
fn a_runtime_shut_down_mid_call_panics_nowhere_and_tears_nothing() {
    if !common::in_own_process("a_runtime_shut_down_mid_call_panics_nowhere_and_tears_nothing") {
        return;
    }
    let panicked = Arc::new(AtomicBool::new(false));
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new({
        let panicked = panicked.clone();
        move |info| {
            panicked.store(true, Ordering::SeqCst);
            hook(info);
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let db = big_database(50, 0);
    diesel_sqlite_backup::BackupExt::save_as(&mut db.connect().unwrap(), &path).unwrap();
    for (i, hold_at) in [1u32, 2, 10, 40, 90].into_iter().enumerate() {
        let tag = i as i64 + 1;
        db.connect()
            .unwrap()
            .batch_execute(&format!("UPDATE marker SET tag = {tag}"))
            .unwrap();
        let old = std::fs::read(&path).unwrap();
        let target = path.clone();
        shut_down_mid_call(&db, move |mut conn, alive| async move {
            let held = held_at(hold_at, &CancelToken::new(), alive);
            let _ = conn.save_as_with(&target, held).await;
        });
        assert_eq!(
            temp_files(dir.path()),
            Vec::<std::path::PathBuf>::new(),
            "held at {hold_at}"
        );
        assert!(
            std::fs::read(&path).unwrap() == old,
            "save held at {hold_at}: old file changed"
        );
        assert_eq!(integrity(&path), "ok");
        assert_ne!(tag_of(&mut db.connect().unwrap()), tag_in_file(&path));
    }

    let other = dir.path().join("other.db");
    diesel_sqlite_backup::BackupExt::save_as(&mut big_database(50, -1).connect().unwrap(), &other)
        .unwrap();
    let mut reader = db.connect().unwrap();
    let count = "SELECT count(*) AS n FROM big";
    let (tag, rows) = (tag_of(&mut reader), scalar(&mut reader, count));
    for hold_at in [1u32, 10, 40, 90] {
        let source = other.clone();
        shut_down_mid_call(&db, move |mut conn, alive| async move {
            let held = held_at(hold_at, &CancelToken::new(), alive);
            let _ = conn.restore_from_with(&source, held).await;
        });
        assert_eq!(tag_of(&mut reader), tag, "restore held at {hold_at}");
        assert_eq!(
            scalar(&mut reader, count),
            rows,
            "restore held at {hold_at}"
        );
    }
    assert_eq!(common::integrity_of(&mut reader), "ok");
    assert!(!panicked.load(Ordering::SeqCst), "a thread panicked");
}

/// On a current-thread runtime (where diesel-async's own wait, `block_in_place`, panics) a
/// `save_as` future dropped mid-copy panics nowhere: the old file stays, no temporary file
/// remains once the blocking task ends, and the same connection then works, outside any
/// transaction.
#[test]
fn a_dropped_save_on_a_current_thread_runtime_panics_nowhere() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.db");
        let db = big_database(20, 0);
        let pool = one_connection_pool(&db).await;
        pool.get().await.unwrap().save_as(&path).await.unwrap();
        let old = std::fs::read(&path).unwrap();
        for hold_at in [1u32, 5, 15] {
            let mut conn = pool.get().await.unwrap();
            conn.batch_execute(&format!("UPDATE marker SET tag = {hold_at}"))
                .await
                .unwrap();
            let token = CancelToken::new();
            let alive = Arc::new(());
            let call = conn.save_as_with(&path, held_at(hold_at, &token, alive.clone()));
            let outcome = tokio::time::timeout(Duration::from_millis(2), call).await;
            assert!(outcome.is_err());
            // The drop waited for the task: its options (and the connection) are released.
            assert_eq!(
                Arc::strong_count(&alive),
                1,
                "held at {hold_at}: still running"
            );
            assert!(token.is_cancelled(), "held at {hold_at}");
            assert!(std::fs::read(&path).unwrap() == old, "held at {hold_at}");
            assert_eq!(temp_files(dir.path()), Vec::<std::path::PathBuf>::new());
            // At once: deadpool's recycle check (diesel-async's transaction state) panicked
            // while the cancelled task still held the connection.
            drop(conn);
            assert_same_connection_usable(&pool, &format!("held at {hold_at}")).await;
        }
    });
}
