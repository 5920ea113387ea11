//! How a test suite gets a fresh migrated database per test in microseconds: migrate once
//! into a template (cached on disk for one-process-per-test runners such as nextest), then
//! clone it for every test, and keep the database of a test that fails.
//!
//! Run: `cargo run --example test_harness`. The template is cached in
//! `target/diesel-sqlite-backup-templates` (under `$CARGO_TARGET_DIR` when that is set); the
//! example prints the file's path.

mod common;

use std::sync::LazyLock;
use std::time::Instant;

use diesel::{Connection, SqliteConnection};
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{KeepOnPanic, Template, TemplateCache};

/// The on-disk cache: one file per migrations content and seed version.
fn cache() -> TemplateCache {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    TemplateCache::new("seed-v1").migrations_dir(migrations)
}

/// Built once per process; with the cache, the migrations run once per machine.
static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
    cache()
        .get_or_build(|conn| {
            conn.run_pending_migrations(common::MIGRATIONS)?;
            common::add_notebook(conn, "Inbox");
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .expect("template")
});

/// What a test body looks like: its own database, kept if the test panics.
fn a_test(name: &str, notes: usize) -> i64 {
    let mut db = KeepOnPanic::connection(TEMPLATE.connection().expect("clone"), name);
    common::fill(&mut db, name, notes, 10);
    common::note_count(&mut db)
}

fn main() {
    let started = Instant::now();
    LazyLock::force(&TEMPLATE);
    println!(
        "template ready in {:?} ({} bytes)",
        started.elapsed(),
        TEMPLATE.len()
    );
    let cached = cache().path().expect("cache path");
    println!("template cached at {}", cached.display());

    for (name, notes) in [("test_a", 3), ("test_b", 5), ("test_c", 0)] {
        let started = Instant::now();
        let count = a_test(name, notes);
        println!(
            "{name}: own database with {count} notes, set up and run in {:?}",
            started.elapsed()
        );
        assert_eq!(count, notes as i64, "tests never see each other's rows");
    }

    let started = Instant::now();
    let mut scratch = SqliteConnection::establish(":memory:").expect("connection");
    scratch
        .run_pending_migrations(common::MIGRATIONS)
        .expect("migrate");
    let migrate = started.elapsed();
    let started = Instant::now();
    let _clone = TEMPLATE.connection().expect("clone");
    println!(
        "migrating from scratch: {migrate:?}; cloning the template: {:?}",
        started.elapsed()
    );
}
