//! Async pools on one `MemoryDatabase` (feature `async`): diesel-async's deadpool and bb8
//! pools from `async_manager()` share one database with each other, with `connect` and with
//! r2d2; tasks moving money never see or save a wrong total while others Save As, snapshot
//! and Open; deadpool-diesel works once its connections get the set-up in a hook.
#![cfg(feature = "async")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::scalar;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::{bb8, deadpool};
use diesel_async::SimpleAsyncConnection;
use diesel_sqlite_backup::{
    AsyncBackupExt, AsyncSqliteConnection, BackupExt, MemoryDatabase, SingletonManager,
};

const ACCOUNTS: i64 = 50;
const TOTAL: i64 = ACCOUNTS * 1000;

type Deadpool = deadpool::Pool<AsyncSqliteConnection>;
type Bb8 = bb8::Pool<AsyncSqliteConnection>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn ledger(conn: &mut SqliteConnection) {
    conn.batch_execute(&format!(
        "CREATE TABLE account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {ACCOUNTS})
         INSERT INTO account SELECT i, 1000, randomblob(2000) FROM n;"
    ))
    .unwrap();
}

fn total_of(conn: &mut SqliteConnection) -> i64 {
    scalar(conn, "SELECT sum(balance) AS n FROM account")
}

fn total_in_file(path: &Path) -> i64 {
    total_of(&mut SqliteConnection::establish(path.to_str().unwrap()).unwrap())
}

/// The total as an async connection sees it.
async fn total_async(conn: &mut AsyncSqliteConnection) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT sum(balance) AS n FROM account")
        .get_result::<N>(conn)
        .await
        .unwrap()
        .n
}

/// One transfer in one transaction (one batch is one blocking call: BEGIN IMMEDIATE waits
/// for the write lock within the busy timeout the manager set, so no statement after it
/// fails busy).
async fn transfer(conn: &mut AsyncSqliteConnection, seed: u64) {
    let from = (seed * 7) % ACCOUNTS as u64 + 1;
    let to = (seed * 13 + 5) % ACCOUNTS as u64 + 1;
    let amount = seed % 17 + 1;
    conn.batch_execute(&format!(
        "BEGIN IMMEDIATE;
         UPDATE account SET balance = balance - {amount} WHERE id = {from};
         UPDATE account SET balance = balance + {amount} WHERE id = {to};
         COMMIT;"
    ))
    .await
    .unwrap();
}

/// 8 tasks (4 on a deadpool pool, 4 on a bb8 pool, both from `async_manager()`) move money
/// while other tasks Save As, snapshot and Open saved files, through both pools: every saved
/// file and every snapshot holds the total, and every task sees one database.
#[test]
fn money_moves_while_others_save_snapshot_and_open() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = MemoryDatabase::new().unwrap();
        ledger(&mut db.connect().unwrap());
        let dp: Deadpool = deadpool::Pool::builder(db.async_manager())
            .max_size(8)
            .build()
            .unwrap();
        let b8: Bb8 = bb8::Pool::builder()
            .max_size(8)
            .build(db.async_manager())
            .await
            .unwrap();

        let moved = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u64 {
            let (dp, b8, moved) = (dp.clone(), b8.clone(), moved.clone());
            tasks.spawn(async move {
                for i in 0..150u64 {
                    let seed = t * 1000 + i;
                    if t % 2 == 0 {
                        transfer(&mut dp.get().await.unwrap(), seed).await;
                    } else {
                        transfer(&mut b8.get().await.unwrap(), seed).await;
                    }
                    moved.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let saved = Arc::new(std::sync::Mutex::new(Vec::<PathBuf>::new()));
        let snapshots = Arc::new(AtomicUsize::new(0));
        for s in 0..3u64 {
            let (dp, b8, saved, snapshots) =
                (dp.clone(), b8.clone(), saved.clone(), snapshots.clone());
            let dir = dir.path().to_path_buf();
            tasks.spawn(async move {
                for i in 0..8u64 {
                    let path = dir.join(format!("save-{s}-{i}.db"));
                    let mut conn = if (s + i) % 2 == 0 {
                        OneOf::D(dp.get().await.unwrap())
                    } else {
                        OneOf::B(b8.get_owned().await.unwrap())
                    };
                    match i % 3 {
                        0 => {
                            conn.get().save_as(&path).await.unwrap();
                            assert_eq!(total_in_file(&path), TOTAL, "{}", path.display());
                            saved.lock().unwrap().push(path);
                        }
                        1 => {
                            let snapshot = conn.get().snapshot().await.unwrap();
                            std::fs::write(&path, &snapshot).unwrap();
                            assert_eq!(total_in_file(&path), TOTAL, "snapshot {s}-{i}");
                            snapshots.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            let earlier = saved.lock().unwrap().last().cloned();
                            if let Some(earlier) = earlier {
                                conn.get().restore_from(&earlier).await.unwrap();
                                assert_eq!(total_async(conn.get()).await, TOTAL);
                            }
                        }
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        assert_eq!(moved.load(Ordering::Relaxed), 8 * 150);
        assert!(!saved.lock().unwrap().is_empty());
        assert!(snapshots.load(Ordering::Relaxed) > 0);

        // One database: a row written through bb8 is read through deadpool, `connect` and
        // an r2d2 pool of the same database.
        b8.get()
            .await
            .unwrap()
            .batch_execute("UPDATE account SET balance = balance + 1 WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(total_async(&mut dp.get().await.unwrap()).await, TOTAL + 1);
        assert_eq!(total_of(&mut db.connect().unwrap()), TOTAL + 1);
        let r2d2 = SingletonManager::pool_builder(1)
            .build(SingletonManager::from_database(db.clone()))
            .unwrap();
        assert_eq!(total_of(&mut r2d2.get().unwrap()), TOTAL + 1);
    });
}

/// A connection from either pool.
enum OneOf {
    D(deadpool::Object<AsyncSqliteConnection>),
    B(bb8::PooledConnection<'static, AsyncSqliteConnection>),
}

impl OneOf {
    fn get(&mut self) -> &mut AsyncSqliteConnection {
        match self {
            OneOf::D(c) => c,
            OneOf::B(c) => c,
        }
    }
}

/// Connections from `async_manager()` get the database's set-up (its busy timeout), and a
/// connection given back inside a raw transaction is not handed out again.
#[test]
fn async_connections_get_the_set_up_and_no_open_transaction() {
    runtime().block_on(async {
        let db = MemoryDatabase::new()
            .unwrap()
            .busy_timeout(std::time::Duration::from_millis(1234));
        let dp: Deadpool = deadpool::Pool::builder(db.async_manager())
            .max_size(1)
            .build()
            .unwrap();
        let mut conn = dp.get().await.unwrap();
        assert_eq!(busy_timeout_async(&mut conn).await, 1234);
        conn.batch_execute("CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        drop(conn);
        let mut conn = dp.get().await.unwrap();
        // A fresh connection: the transaction was rolled back with the old one.
        conn.batch_execute("BEGIN; COMMIT").await.unwrap();
        assert_eq!(count_async(&mut conn).await, 0);
    });
}

async fn busy_timeout_async(conn: &mut AsyncSqliteConnection) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        timeout: i64,
    }
    diesel::sql_query("PRAGMA busy_timeout")
        .get_result::<T>(conn)
        .await
        .unwrap()
        .timeout
}

async fn count_async(conn: &mut AsyncSqliteConnection) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM t")
        .get_result::<N>(conn)
        .await
        .unwrap()
        .n
}

/// deadpool-diesel (`Manager::new(db.uri(), Runtime::Tokio1)` and `interact`) shares the
/// database; its manager only calls `establish`, so the set-up comes from a `post_create`
/// hook calling `MemoryDatabase::set_up` (without it the busy timeout is SQLite's 0).
#[test]
fn deadpool_diesel_shares_the_database_with_a_set_up_hook() {
    use deadpool_diesel::sqlite::{Hook, HookError, Manager, Pool, Runtime};
    runtime().block_on(async {
        let db = MemoryDatabase::new().unwrap();
        ledger(&mut db.connect().unwrap());

        let bare = Pool::builder(Manager::new(db.uri(), Runtime::Tokio1))
            .build()
            .unwrap();
        let (total, timeout) = bare
            .get()
            .await
            .unwrap()
            .interact(|c| {
                (
                    total_of(c),
                    scalar(c, "SELECT timeout AS n FROM pragma_busy_timeout"),
                )
            })
            .await
            .unwrap();
        assert_eq!(total, TOTAL, "deadpool-diesel sees the shared database");
        assert_eq!(timeout, 0, "but without the set-up");

        let set_up = db.clone();
        let pool = Pool::builder(Manager::new(db.uri(), Runtime::Tokio1))
            .max_size(4)
            .post_create(Hook::sync_fn(move |conn, _| {
                let mut guard = conn.lock().map_err(|_| HookError::message("poisoned"))?;
                set_up
                    .set_up(&mut guard)
                    .map_err(|e| HookError::message(e.to_string()))
            }))
            .build()
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..4u64 {
            let pool = pool.clone();
            tasks.spawn(async move {
                for i in 0..50u64 {
                    let seed = t * 100 + i;
                    pool.get()
                        .await
                        .unwrap()
                        .interact(move |c| {
                            c.immediate_transaction::<_, diesel::result::Error, _>(|c| {
                                c.batch_execute(&format!(
                                    "UPDATE account SET balance = balance - 1 WHERE id = {};
                                     UPDATE account SET balance = balance + 1 WHERE id = {};",
                                    seed % 50 + 1,
                                    (seed * 3) % 50 + 1
                                ))
                            })
                        })
                        .await
                        .unwrap()
                        .unwrap();
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        let (total, timeout) = pool
            .get()
            .await
            .unwrap()
            .interact(|c| {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("dd.db");
                c.save_as(&file).unwrap();
                (
                    total_in_file(&file),
                    scalar(c, "SELECT timeout AS n FROM pragma_busy_timeout"),
                )
            })
            .await
            .unwrap();
        assert_eq!(total, TOTAL);
        assert_eq!(timeout, 5000, "the hook applied the set-up");
        assert_eq!(total_of(&mut db.connect().unwrap()), TOTAL);
    });
}

/// SQLite's own count of the bytes it holds: independent of the allocator and of RSS.
fn sqlite_memory_used() -> i64 {
    // SAFETY: a thread-safe read of SQLite's global memory statistics.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// ~1 MiB written through an async pool, read through `connect` and r2d2, then every
/// handle, pool and connection dropped.
async fn fill_and_drop_async() {
    let db = MemoryDatabase::new().unwrap();
    let dp: Deadpool = deadpool::Pool::builder(db.async_manager())
        .max_size(2)
        .build()
        .unwrap();
    dp.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1024)
             INSERT INTO t SELECT randomblob(1000) FROM n;",
        )
        .await
        .unwrap();
    let r2d2 = SingletonManager::pool_builder(1)
        .build(SingletonManager::from_database(db.clone()))
        .unwrap();
    let count = "SELECT count(*) AS n FROM t";
    assert_eq!(scalar(&mut r2d2.get().unwrap(), count), 1024);
    assert_eq!(scalar(&mut db.connect().unwrap(), count), 1024);
    let conn = dp.get().await.unwrap();
    drop((db, r2d2, dp));
    drop(conn); // the last one
}

/// Connections from `connect`, r2d2 and an async pool share one database, freed when the
/// last of them goes: 100 databases of ~1 MiB that were not freed would show as ~100 MiB.
#[test]
fn the_memory_is_freed_after_the_last_async_connection() {
    if !common::in_own_process("the_memory_is_freed_after_the_last_async_connection") {
        return;
    }
    runtime().block_on(async {
        fill_and_drop_async().await; // one-time set-up before the baseline
        let before = sqlite_memory_used();
        for _ in 0..100 {
            fill_and_drop_async().await;
        }
        let grown = sqlite_memory_used() - before;
        assert!(
            grown < 1 << 20,
            "SQLite holds {grown} more bytes after 100 dropped databases"
        );
    });
}
