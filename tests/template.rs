//! Test templates: migrate once, clone per test, cache across processes, keep failures.

mod common;

use std::fs;
use std::sync::LazyLock;

use common::{app, scalar};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{BackupError, BackupExt, KeepOnPanic, Template, TemplateCache};

static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
    Template::new(|conn| {
        conn.run_pending_migrations(app::MIGRATIONS)?;
        app::fill(conn, "seed", 3, 10);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .expect("template builds")
});

/// Clones are writable, isolated from each other, and never change the template.
#[test]
fn clones_are_private_and_writable() {
    let mut a = TEMPLATE.connection().unwrap();
    let mut b = TEMPLATE.connection().unwrap();
    app::fill(&mut a, "only in a", 5, 1);
    a.batch_execute("DELETE FROM notes WHERE notebook_id = 1")
        .unwrap();
    assert_eq!(app::note_count(&mut a), 5);
    assert_eq!(app::note_count(&mut b), 3);
    assert_eq!(app::note_count(&mut TEMPLATE.connection().unwrap()), 3);
    // A clone is backup-capable.
    let dir = tempfile::tempdir().unwrap();
    a.save_as(dir.path().join("a.db")).unwrap();
    assert_eq!(common::notes_in_file(&dir.path().join("a.db")), 5);
}

/// A pool clone is shared by that pool's connections and isolated from other clones.
#[test]
fn pool_clones_share_within_and_isolate_between() {
    let p1 = TEMPLATE.pool().unwrap();
    let p2 = TEMPLATE.pool().unwrap();
    app::fill(&mut p1.get().unwrap(), "p1", 2, 1);
    assert_eq!(app::note_count(&mut p1.get().unwrap()), 5);
    assert_eq!(app::note_count(&mut p2.get().unwrap()), 3);
    assert_eq!(app::note_count(&mut TEMPLATE.connection().unwrap()), 3);
}

/// `init`'s own error comes back as BackupError::Init.
#[test]
fn failing_init_reports_its_error() {
    let err = Template::new(|conn| conn.batch_execute("CREATE TABLE broken(")).unwrap_err();
    assert!(matches!(err, BackupError::Init { .. }), "{err}");
    assert!(err.to_string().contains("incomplete input"), "{err}");
}

/// A database another connection keeps locked gives an error, never an empty template.
#[test]
fn from_connection_of_a_locked_database_is_an_error() {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(diesel_sqlite_backup::SingletonManager::new())
        .unwrap();
    let (mut locker, mut reader) = (pool.get().unwrap(), pool.get().unwrap());
    locker
        .batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    reader.batch_execute("PRAGMA busy_timeout = 0").unwrap();
    locker.batch_execute("BEGIN EXCLUSIVE").unwrap();
    let result = Template::from_connection(&mut reader);
    locker.batch_execute("COMMIT").unwrap();
    let err = result.expect_err("a locked database must not become an empty template");
    assert!(err.is_busy(), "{err}");
    assert!(!Template::from_connection(&mut reader).unwrap().is_empty());
}

/// `from_file` takes a saved database, and refuses a bad file like restore_from does.
#[test]
fn from_file_loads_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.db");
    TEMPLATE.connection().unwrap().save_as(&file).unwrap();
    let t = Template::from_file(&file).unwrap();
    assert_eq!(app::note_count(&mut t.connection().unwrap()), 3);
    fs::write(&file, b"not a database at all, clearly not one").unwrap();
    assert!(Template::from_file(&file).is_err());
    assert!(Template::from_file(dir.path().join("missing.db")).is_err());
}

fn copy_migrations(to: &std::path::Path) {
    for entry in fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        fs::create_dir_all(&dest).unwrap();
        for f in fs::read_dir(entry.path()).unwrap() {
            let f = f.unwrap();
            fs::copy(f.path(), dest.join(f.file_name())).unwrap();
        }
    }
}

/// The key follows the migrations' content and the seed version; a changed migration gives
/// a new key and a rebuilt template, never the stale one.
#[test]
fn cache_key_follows_migration_content_and_seed() {
    let root = tempfile::tempdir().unwrap();
    let migrations = root.path().join("migrations");
    copy_migrations(&migrations);
    let cache = TemplateCache::new("v1")
        .migrations_dir(&migrations)
        .dir(root.path().join("cache"));
    let k1 = cache.key().unwrap();
    assert_eq!(k1, cache.key().unwrap(), "key is deterministic");
    assert_ne!(k1, cache.clone().migrations_dir(&migrations).key().unwrap());
    assert_ne!(
        k1,
        TemplateCache::new("v2")
            .migrations_dir(&migrations)
            .key()
            .unwrap()
    );

    let builds = std::cell::Cell::new(0);
    let init = |conn: &mut diesel::SqliteConnection| {
        builds.set(builds.get() + 1);
        conn.run_pending_migrations(app::MIGRATIONS).map(drop)
    };
    cache.get_or_build(init).unwrap();
    cache.get_or_build(init).unwrap();
    assert_eq!(builds.get(), 1, "the second call loads the cached file");
    assert!(cache.path().unwrap().is_file());

    let up = migrations.join("2025-01-01-000001_create_notes/up.sql");
    let sql = fs::read_to_string(&up).unwrap();
    fs::write(
        &up,
        sql.replace(
            "body TEXT NOT NULL DEFAULT ''",
            "body TEXT NOT NULL DEFAULT 'x'",
        ),
    )
    .unwrap();
    let k2 = cache.key().unwrap();
    assert_ne!(k1, k2, "a changed migration must change the key");
    cache.get_or_build(init).unwrap();
    assert_eq!(builds.get(), 2, "a changed migration rebuilds the template");
}

/// A cached file cut to zero bytes (a crash of another tool, a `: > file`) is rebuilt: SQLite
/// would open it as an empty database, and every test would get no tables.
#[test]
fn an_empty_cached_file_is_rebuilt_not_used() {
    let root = tempfile::tempdir().unwrap();
    let cache = TemplateCache::new("empty-file")
        .migrations_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .dir(root.path());
    let builds = std::cell::Cell::new(0);
    let init = |conn: &mut diesel::SqliteConnection| {
        builds.set(builds.get() + 1);
        conn.run_pending_migrations(app::MIGRATIONS)?;
        app::fill(conn, "e", 5, 10);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    cache.get_or_build(init).unwrap();
    fs::write(cache.path().unwrap(), b"").unwrap();
    let t = cache.get_or_build(init).unwrap();
    assert_eq!(builds.get(), 2, "the empty file was used");
    assert_eq!(app::note_count(&mut t.connection().unwrap()), 5);
    assert_eq!(common::notes_in_file(&cache.path().unwrap()), 5);
}

/// Many builders of the same key at once (threads here; the rename makes processes equally
/// safe) all get a complete template, and the cache file is a valid database.
#[test]
fn concurrent_builds_of_one_key_are_safe() {
    let root = tempfile::tempdir().unwrap();
    let cache = TemplateCache::new("concurrent")
        .migrations_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .dir(root.path());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let t = cache
                    .get_or_build(|conn| {
                        conn.run_pending_migrations(app::MIGRATIONS)?;
                        app::fill(conn, "c", 50, 10);
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    })
                    .unwrap();
                assert_eq!(app::note_count(&mut t.connection().unwrap()), 50);
            });
        }
    });
    let path = cache.path().unwrap();
    assert_eq!(common::integrity(&path), "ok");
    assert_eq!(common::notes_in_file(&path), 50);
    assert!(common::temp_files(root.path()).is_empty());
}

/// The panicking child for `keep_on_panic_saves_the_failed_database`.
#[test]
fn keep_on_panic_child() {
    let Ok(dir) = std::env::var("DSB_KEEP_DIR") else {
        return; // only meaningful when the parent test runs it
    };
    let mut db =
        KeepOnPanic::connection(TEMPLATE.connection().unwrap(), "keep_on_panic_child").dir(&dir);
    app::fill(&mut db, "evidence", 4, 1);
    db.batch_execute("BEGIN; INSERT INTO notebooks(title) VALUES ('uncommitted');")
        .unwrap();
    panic!("simulated test failure");
}

/// A panicking test keeps its database and says how to open it; a passing test keeps nothing.
#[test]
fn keep_on_panic_saves_the_failed_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "keep_on_panic_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DSB_KEEP_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child test should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("kept the database of failed test"))
        .unwrap_or_else(|| panic!("no message in:\n{stderr}"));
    let path = line.split("sqlite3 ").nth(1).unwrap().trim();
    assert!(path.starts_with(dir.path().to_str().unwrap()), "{line}");
    let mut kept = SqliteConnection::establish(path).unwrap();
    assert_eq!(app::note_count(&mut kept), 7, "the committed rows are kept");
    assert_eq!(
        scalar(
            &mut kept,
            "SELECT count(*) AS n FROM notebooks WHERE title = 'uncommitted'"
        ),
        0
    );

    // No panic, nothing written.
    let quiet = tempfile::tempdir().unwrap();
    drop(KeepOnPanic::connection(TEMPLATE.connection().unwrap(), "fine").dir(quiet.path()));
    assert_eq!(fs::read_dir(quiet.path()).unwrap().count(), 0);
}
