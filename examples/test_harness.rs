//! A test suite with `#[diesel_sqlite_backup::test]`: every test gets its own copy of a
//! template migrated once from the crate's `migrations/` (once per machine and migration
//! change, even under `cargo nextest`), in tens of microseconds; a failing test keeps its
//! database and prints `sqlite3 <path>`.
//!
//! Run: `cargo test --example test_harness -- --nocapture` (Cargo.toml marks this example
//! `test = true`, so `cargo test` runs it too), or `cargo run --example test_harness`, where
//! `main` calls the tests. Templates are cached in `target/diesel-sqlite-backup-templates`,
//! or in `$DIESEL_SQLITE_BACKUP_TEMPLATES`.

mod common;

use diesel::prelude::*;
use diesel_sqlite_backup::SingletonManager;

/// A borrowed connection to a private copy.
#[diesel_sqlite_backup::test]
fn test_a(conn: &mut SqliteConnection) {
    common::fill(conn, "test_a", 3, 10);
    let count = common::note_count(conn);
    println!("test_a: own database with {count} notes");
    assert_eq!(count, 3, "tests never see each other's rows");
}

/// An owned connection, and a `Result`: an `Err` fails the test and keeps its database.
#[diesel_sqlite_backup::test]
fn test_b(mut conn: SqliteConnection) -> QueryResult<()> {
    common::fill(&mut conn, "test_b", 5, 10);
    let count: i64 = common::notes::table.count().get_result(&mut conn)?;
    println!("test_b: own database with {count} notes");
    assert_eq!(count, 5);
    Ok(())
}

/// A `SingletonManager` pool whose connections share one private copy.
#[diesel_sqlite_backup::test]
fn test_c(pool: r2d2::Pool<SingletonManager>) {
    let count = common::note_count(&mut pool.get().unwrap());
    println!("test_c: own database with {count} notes");
    assert_eq!(count, 0);
}

/// Outside `cargo test` the tests are ordinary functions: this runs them as a program.
fn main() {
    test_a();
    test_b().expect("test_b");
    test_c();
    println!("as a test suite: cargo test --example test_harness -- --nocapture");
}
