//! `#[diesel_sqlite_backup::test]` in every form: each argument kind, fixtures, no
//! migrations, the default folder, a `Result` return, async tests, isolation between tests
//! running at once, and the database a failed test keeps.
//!
//! The migrations (20) and fixtures (1,000 users, 3 posts) are in tests/attribute/.

use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_sqlite_backup::SingletonManager;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn scalar(conn: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

fn rows(conn: &mut SqliteConnection, table: &str) -> i64 {
    scalar(conn, &format!("SELECT count(*) AS n FROM {table}"))
}

fn tables(conn: &mut SqliteConnection) -> i64 {
    scalar(
        conn,
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE '\\_\\_diesel%' ESCAPE '\\'",
    )
}

#[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations")]
fn a_borrowed_connection_gets_every_migration(conn: &mut SqliteConnection) {
    assert_eq!(tables(conn), 20);
    assert_eq!(rows(conn, "__diesel_schema_migrations"), 20);
    assert_eq!(rows(conn, "users"), 0, "no fixtures asked for");
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", scripts("users", "posts"))
)]
fn fixtures_run_in_order_after_the_migrations(conn: &mut SqliteConnection) {
    assert_eq!(rows(conn, "users"), 1000);
    assert_eq!(rows(conn, "posts"), 3, "posts.sql needs users.sql first");
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
fn an_owned_connection_is_a_private_copy(mut conn: SqliteConnection) {
    assert_eq!(rows(&mut conn, "users"), 1000);
    assert_eq!(rows(&mut conn, "posts"), 0);
    conn.transaction(|c| diesel::sql_query("DELETE FROM users").execute(c))
        .unwrap();
    assert_eq!(rows(&mut conn, "users"), 0);
    drop(conn); // the test may do anything with what it owns
}

#[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations")]
fn a_pool_shares_one_private_copy(pool: r2d2::Pool<SingletonManager>) {
    diesel::sql_query("INSERT INTO users (name, email) VALUES ('a', 'a@x')")
        .execute(&mut pool.get().unwrap())
        .unwrap();
    let other = pool.clone();
    let seen = std::thread::spawn(move || rows(&mut other.get().unwrap(), "users"))
        .join()
        .unwrap();
    assert_eq!(seen, 1, "every connection of the pool sees the row");
}

#[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations")]
fn a_diesel_r2d2_pool_is_the_same_pool(pool: diesel::r2d2::Pool<SingletonManager>) {
    assert_eq!(tables(&mut pool.get().unwrap()), 20);
}

#[diesel_sqlite_backup::test(migrations = false)]
fn no_migrations_is_an_empty_database(conn: &mut SqliteConnection) {
    assert_eq!(tables(conn), 0);
    assert_eq!(
        scalar(conn, "SELECT count(*) AS n FROM sqlite_master"),
        0,
        "not even diesel's migrations table"
    );
}

/// `migrations/` beside Cargo.toml: the crate's sample migrations.
#[diesel_sqlite_backup::test]
fn the_default_is_migrations_beside_cargo_toml(conn: &mut SqliteConnection) {
    assert_eq!(rows(conn, "notebooks"), 0);
    assert_eq!(rows(conn, "__diesel_schema_migrations"), 2);
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
fn a_test_may_return_a_result(conn: &mut SqliteConnection) -> QueryResult<()> {
    diesel::sql_query("UPDATE users SET name = 'renamed' WHERE id = 1").execute(conn)?;
    assert_eq!(
        scalar(
            conn,
            "SELECT count(*) AS n FROM users WHERE name = 'renamed'"
        ),
        1
    );
    Ok(())
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
async fn an_async_test_runs_on_tokio(conn: &mut SqliteConnection) {
    use diesel_sqlite_backup::__private::tokio;
    assert!(tokio::runtime::Handle::try_current().is_ok());
    tokio::task::yield_now().await;
    assert_eq!(rows(conn, "users"), 1000);
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations", flavor = "multi_thread")]
async fn an_async_test_may_take_a_pool_on_a_multi_thread_runtime(
    pool: r2d2::Pool<SingletonManager>,
) -> Result<(), String> {
    use diesel_sqlite_backup::__private::tokio;
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    assert_eq!(flavor, tokio::runtime::RuntimeFlavor::MultiThread);
    let count = tokio::task::spawn_blocking(move || rows(&mut pool.get().unwrap(), "users"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(count, 0);
    Ok(())
}

/// Rows of `table` through an async connection.
#[cfg(feature = "async")]
async fn async_rows(conn: &mut diesel_sqlite_backup::AsyncSqliteConnection, table: &str) -> i64 {
    let query = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"));
    let count: Count = diesel_async::RunQueryDsl::get_result(query, conn)
        .await
        .unwrap();
    count.n
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
async fn an_async_test_may_borrow_an_async_connection(
    conn: &mut diesel_async::sync_connection_wrapper::SyncConnectionWrapper<SqliteConnection>,
) {
    assert_eq!(async_rows(conn, "users").await, 1000);
    assert_eq!(async_rows(conn, "posts").await, 0);
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
async fn an_async_test_may_own_an_async_connection(
    mut conn: diesel_sqlite_backup::AsyncSqliteConnection,
) -> QueryResult<()> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute("DELETE FROM users").await?;
    assert_eq!(async_rows(&mut conn, "users").await, 0);
    drop(conn);
    Ok(())
}

/// A deadpool pool holding a private copy: its connections share it, other tests never see it.
#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
async fn an_async_test_may_take_a_deadpool_pool(
    pool: diesel_async::pooled_connection::deadpool::Pool<
        diesel_async::sync_connection_wrapper::SyncConnectionWrapper<SqliteConnection>,
    >,
) {
    use diesel_async::SimpleAsyncConnection;
    let mut one = pool.get().await.unwrap();
    let mut two = pool.get().await.unwrap(); // a second connection, held at once
    one.batch_execute("INSERT INTO users (name, email) VALUES ('async', 'async@x')")
        .await
        .unwrap();
    assert_eq!(async_rows(&mut two, "users").await, 1001, "one database");
    assert_eq!(pool.status().size, 2);
}

/// Both isolation tests hold here until the other has inserted its row (at most a few
/// seconds: under `--test-threads=1` or nextest they never meet, and check alone).
fn meet() {
    static MET: (Mutex<u32>, Condvar) = (Mutex::new(0), Condvar::new());
    if std::env::var_os("NEXTEST").is_some() {
        return;
    }
    let (count, arrived) = &MET;
    let mut n = count.lock().unwrap();
    *n += 1;
    arrived.notify_all();
    let _ = arrived
        .wait_timeout_while(n, Duration::from_secs(5), |n| *n < 2)
        .unwrap();
}

#[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations")]
fn isolation_one(conn: &mut SqliteConnection) {
    diesel::sql_query("INSERT INTO users (name, email) VALUES ('one', 'one@x')")
        .execute(conn)
        .unwrap();
    meet();
    assert_eq!(rows(conn, "users"), 1, "only this test's row");
}

#[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations")]
fn isolation_two(conn: &mut SqliteConnection) {
    diesel::sql_query("INSERT INTO users (name, email) VALUES ('two', 'two@x')")
        .execute(conn)
        .unwrap();
    meet();
    assert_eq!(rows(conn, "users"), 1, "only this test's row");
}

/// The failing tests below fail only when `keep_*` runs them as children.
fn child() -> bool {
    std::env::var_os("DSB_ATTRIBUTE_CHILD").is_some()
}

fn evidence(conn: &mut SqliteConnection) {
    diesel::sql_query("INSERT INTO posts (user_id, title) VALUES (7, 'evidence')")
        .execute(conn)
        .unwrap();
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
fn failing_borrowed(conn: &mut SqliteConnection) {
    if child() {
        evidence(conn);
        panic!("simulated failure");
    }
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
fn failing_owned(mut conn: SqliteConnection) {
    if child() {
        evidence(&mut conn);
        panic!("simulated failure");
    }
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
fn failing_pool(pool: r2d2::Pool<SingletonManager>) {
    if child() {
        evidence(&mut pool.get().unwrap());
        panic!("simulated failure");
    }
}

#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
fn failing_with_err(conn: &mut SqliteConnection) -> Result<(), String> {
    if child() {
        evidence(conn);
        return Err("simulated failure".into());
    }
    Ok(())
}

/// Evidence through an async connection.
#[cfg(feature = "async")]
async fn async_evidence(conn: &mut diesel_sqlite_backup::AsyncSqliteConnection) {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute("INSERT INTO posts (user_id, title) VALUES (7, 'evidence')")
        .await
        .unwrap();
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
async fn failing_async_borrowed(conn: &mut diesel_sqlite_backup::AsyncSqliteConnection) {
    if child() {
        async_evidence(conn).await;
        panic!("simulated failure");
    }
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users"),
    flavor = "multi_thread"
)]
async fn failing_async_owned(
    mut conn: diesel_sqlite_backup::AsyncSqliteConnection,
) -> Result<(), String> {
    if child() {
        async_evidence(&mut conn).await;
        return Err("simulated failure".into());
    }
    Ok(())
}

#[cfg(feature = "async")]
#[diesel_sqlite_backup::test(
    migrations = "tests/attribute/migrations",
    fixtures(path = "tests/attribute/fixtures", "users")
)]
async fn failing_async_pool(
    pool: diesel_async::pooled_connection::deadpool::Pool<
        diesel_sqlite_backup::AsyncSqliteConnection,
    >,
) {
    if child() {
        async_evidence(&mut pool.get().await.unwrap()).await;
        panic!("simulated failure");
    }
}

/// Runs `test` of this binary as a failing child; returns the database it kept.
fn kept_by(test: &str) -> (tempfile::TempDir, SqliteConnection) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("DSB_ATTRIBUTE_CHILD", "1")
        .env(
            "DIESEL_SQLITE_BACKUP_TEMPLATES",
            dir.path().join("templates"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 failed"), "{test} should fail:\n{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("kept the database of failed test"))
        .unwrap_or_else(|| panic!("{test}: no kept database in:\n{stderr}"));
    assert!(line.contains(&format!("attribute::{test}")), "{line}");
    let path = line.split("sqlite3 ").nth(1).unwrap().trim();
    let failed = dir.path().join("diesel-sqlite-backup-failed-tests");
    assert!(std::path::Path::new(path).starts_with(&failed), "{line}");
    assert!(std::path::Path::new(path).is_file(), "{path}");
    (dir, SqliteConnection::establish(path).unwrap())
}

fn assert_kept(test: &str) {
    let (_dir, mut kept) = kept_by(test);
    assert_eq!(rows(&mut kept, "users"), 1000, "{test}: the fixture");
    assert_eq!(
        scalar(
            &mut kept,
            "SELECT count(*) AS n FROM posts WHERE title = 'evidence'"
        ),
        1,
        "{test}: the failed test's own row"
    );
}

#[test]
fn a_panicking_test_with_a_borrowed_connection_keeps_its_database() {
    assert_kept("failing_borrowed");
}

#[test]
fn a_panicking_test_that_owned_its_connection_keeps_its_database() {
    assert_kept("failing_owned");
}

#[test]
fn a_panicking_test_with_a_pool_keeps_its_database() {
    assert_kept("failing_pool");
}

#[test]
fn a_test_that_returns_err_keeps_its_database() {
    assert_kept("failing_with_err");
}

#[cfg(feature = "async")]
#[test]
fn a_panicking_async_test_with_a_borrowed_async_connection_keeps_its_database() {
    assert_kept("failing_async_borrowed");
}

#[cfg(feature = "async")]
#[test]
fn an_async_test_that_owned_its_connection_and_returns_err_keeps_its_database() {
    assert_kept("failing_async_owned");
}

#[cfg(feature = "async")]
#[test]
fn a_panicking_async_test_with_a_deadpool_pool_keeps_its_database() {
    assert_kept("failing_async_pool");
}
