//! The cost per test of a fresh migrated database: migrate from scratch, clone a template
//! (two mechanisms), clone into a pool, or load the cached template file.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::{Connection, SqliteConnection};
use diesel_migrations::{
    embed_migrations, EmbeddedMigrations, FileBasedMigrations, MigrationHarness,
};
use diesel_sqlite_backup::{Template, TemplateCache};

use crate::report::{fmt, Goal};

const CRATE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Writes `n` migrations, each a table with an index, in diesel_migrations' layout.
fn synthetic_migrations(dir: &Path, n: usize) -> FileBasedMigrations {
    for i in 0..n {
        let m = dir.join(format!("2025-01-01-{i:06}_table_{i}"));
        fs::create_dir_all(&m).unwrap();
        fs::write(
            m.join("up.sql"),
            format!(
                "CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount INTEGER NOT NULL DEFAULT 0, note TEXT);
                 CREATE INDEX t{i}_by_name ON t{i}(name);"
            ),
        )
        .unwrap();
        fs::write(m.join("down.sql"), format!("DROP TABLE t{i};")).unwrap();
    }
    FileBasedMigrations::from_path(dir).unwrap()
}

fn per_op(iterations: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

type MigrationResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Measures one migration set; returns (migrate, deserialize clone) per test.
fn measure(
    label: &str,
    migrate: impl Fn(&mut SqliteConnection) -> MigrationResult + Copy,
    key_dir: &Path,
    cache_dir: &Path,
) -> (Duration, Duration) {
    let template = Template::new(migrate).unwrap();
    let cache = TemplateCache::new(label)
        .dir(cache_dir)
        .migrations_dir(key_dir);
    cache.get_or_build(migrate).unwrap();

    let rows = [
        (
            "migrate from scratch",
            per_op(50, || {
                let mut c = SqliteConnection::establish(":memory:").unwrap();
                migrate(&mut c).unwrap();
            }),
        ),
        (
            "Template::connection (sqlite3_deserialize)",
            per_op(2_000, || {
                template.connection().unwrap();
            }),
        ),
        (
            "SqliteConnection::establish + Template::copy_into (backup API)",
            per_op(2_000, || {
                let mut c = SqliteConnection::establish(":memory:").unwrap();
                template.copy_into(&mut c).unwrap();
            }),
        ),
        (
            "Template::pool (SingletonManager + backup)",
            per_op(500, || {
                template.pool().unwrap();
            }),
        ),
        (
            "TemplateCache::get_or_build from file + connection",
            per_op(500, || {
                cache.get_or_build(migrate).unwrap().connection().unwrap();
            }),
        ),
    ];
    let base = rows[0].1;
    println!(
        "\n### Fresh migrated database per test: {label} ({} bytes)\n",
        template.len()
    );
    println!("| method | per test | faster than migrating |");
    println!("| --- | ---: | ---: |");
    for (name, t) in &rows {
        println!(
            "| {name} | {} | {:.0}x |",
            fmt(*t),
            base.as_secs_f64() / t.as_secs_f64()
        );
    }
    (base, rows[1].1)
}

pub fn run(work: &Path) -> Vec<Goal> {
    let crate_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let (m1, c1) = measure(
        "crate migrations (2)",
        |c| c.run_pending_migrations(CRATE_MIGRATIONS).map(drop),
        Path::new(crate_dir),
        work,
    );
    let synthetic_dir = work.join("synthetic-migrations");
    let synthetic = synthetic_migrations(&synthetic_dir, 50);
    let synthetic = &synthetic;
    let (m50, c50) = measure(
        "50 synthetic migrations",
        move |c| c.run_pending_migrations(synthetic.clone()).map(drop),
        &synthetic_dir,
        work,
    );
    vec![
        Goal {
            what: "clone cost, crate migrations".into(),
            value: c1.as_secs_f64() * 1e3,
            limit: 1.0,
            unit: " ms",
        },
        Goal {
            what: "clone cost, 50 migrations".into(),
            value: c50.as_secs_f64() * 1e3,
            limit: 1.0,
            unit: " ms",
        },
        Goal {
            what: "clone / migrate, 50 migrations (at most 1/20)".into(),
            value: c50.as_secs_f64() / m50.as_secs_f64(),
            limit: 0.05,
            unit: "x",
        },
        Goal {
            what: "clone / migrate, crate migrations".into(),
            value: c1.as_secs_f64() / m1.as_secs_f64(),
            limit: 1.0,
            unit: "x",
        },
    ]
}
