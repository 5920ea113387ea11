//! `Autosave` in an async app (feature `async`): started on a `MemoryDatabase` without a
//! runtime, it follows commits made through an async pool; `save_now_async` and
//! `stop_async` wait on the blocking pool.
#![cfg(feature = "async")]

mod common;

use std::time::Duration;

use common::scalar;
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool;
use diesel_async::SimpleAsyncConnection;
use diesel_sqlite_backup::{AsyncSqliteConnection, Autosave, AutosaveOptions, MemoryDatabase};

fn rows_in_file(path: &std::path::Path) -> i64 {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    scalar(&mut conn, "SELECT count(*) AS n FROM t")
}

#[test]
fn autosave_follows_an_async_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auto.db");
    let db = MemoryDatabase::new().unwrap();
    // No runtime exists yet.
    let options = AutosaveOptions::default().every(Duration::from_secs(3600));
    let autosave = Autosave::start_with_database(&db, &path, options).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool: deadpool::Pool<AsyncSqliteConnection> =
            deadpool::Pool::builder(db.async_manager()).build().unwrap();
        pool.get()
            .await
            .unwrap()
            .batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        autosave.save_now_async().await.unwrap();
        assert_eq!(rows_in_file(&path), 1);
        // A dropped save_now_async future harms nothing.
        pool.get()
            .await
            .unwrap()
            .batch_execute("INSERT INTO t VALUES (2)")
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::ZERO, autosave.save_now_async()).await;
        pool.get()
            .await
            .unwrap()
            .batch_execute("INSERT INTO t VALUES (3)")
            .await
            .unwrap();
        autosave.stop_async().await.unwrap();
        assert_eq!(rows_in_file(&path), 3);
    });
}
