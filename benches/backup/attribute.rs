//! The per-test cost of `#[diesel_sqlite_backup::test]` with an empty body (set-up and
//! teardown: the template of the set, a private copy, the guard that keeps a failed test's
//! database), next to what `sqlx::test` does on SQLite for every test: a fresh database,
//! every migration and the fixture, done here through diesel. 20 migrations, 1,000 rows.
//!
//! A bench is built without `cfg(test)`, where `#[test]` functions do not exist, so this
//! calls what the attribute's expansion calls, in its order, on the set it embeds for
//! tests/attribute.rs.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use diesel_sqlite_backup::__private;

use crate::report::{fmt, Goal, Row};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/attribute/migrations");
const USERS: &str = include_str!("../../tests/attribute/fixtures/users.sql");

fn migrations() -> EmbeddedMigrations {
    MIGRATIONS
}

/// The `Set` the attribute generates, but for the key's file list, which only the first
/// (untimed) call reads.
static SET: __private::Set = __private::Set {
    id: "bench: tests/attribute/migrations | users.sql",
    migrations: Some(migrations as fn() -> _),
    migration_files: &[],
    fixtures: &[("users", USERS)],
};

/// What an empty `fn t(conn: &mut SqliteConnection)` under the attribute runs.
fn attribute_test() {
    let template = __private::template(&SET);
    let mut db = __private::connection(&template, "bench::attribute_test");
    let conn: &mut SqliteConnection = &mut db;
    let result = std::hint::black_box(conn).batch_execute(""); // the empty body
    __private::finish(db, result).unwrap();
}

/// What `sqlx::test` does per test on SQLite.
fn sqlx_like_test() {
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.run_pending_migrations(MIGRATIONS).unwrap();
    conn.batch_execute(USERS).unwrap();
}

/// Time per call over `n` calls.
fn per_call(n: u32, f: fn()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

pub fn run(rounds: usize) -> Vec<Goal> {
    attribute_test(); // builds or loads the template: once per process, not per test
    sqlx_like_test();
    let mut attribute = Row::new("#[diesel_sqlite_backup::test], empty body", 0);
    let mut sqlx_like = Row::new("sqlx::test-like: fresh database + migrations + fixture", 0);
    // Interleaved, so both see the same machine.
    for _ in 0..rounds.max(3) {
        attribute.samples.push(per_call(500, attribute_test));
        sqlx_like.samples.push(per_call(10, sqlx_like_test));
    }
    let (a, s) = (attribute.per_op(), sqlx_like.per_op());
    println!("\n### Test attribute: per test, 20 migrations and a 1,000-row fixture\n");
    println!("| method | median per test |");
    println!("| --- | ---: |");
    println!("| {} | {} |", attribute.name, fmt(a));
    println!("| {} | {} |", sqlx_like.name, fmt(s));
    vec![
        Goal {
            what: "attribute set-up + teardown per test".into(),
            value: a.as_secs_f64() * 1e3,
            limit: 1.0,
            unit: " ms",
        },
        Goal {
            what: "attribute / sqlx::test-like (at most 1/20)".into(),
            value: a.as_secs_f64() / s.as_secs_f64(),
            limit: 0.05,
            unit: "x",
        },
    ]
}
