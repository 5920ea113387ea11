//! What `#[diesel_sqlite_backup::test]` expands to calls (through `__private`): one template
//! per process for each set of migrations and fixtures, cached on disk by their content.

use std::error::Error;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use diesel::connection::SimpleConnection;
use diesel::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use super::{KeepOnPanic, Keepable, Template, TemplateCache};
use crate::{MemoryDatabase, SingletonManager};

/// One set of migrations and fixtures, as the attribute embedded them.
pub struct Set {
    /// The set within this process: its migrations folder and fixture files.
    pub id: &'static str,
    /// The `embed_migrations!` of the folder (not `Clone`, so made on demand).
    pub migrations: Option<fn() -> EmbeddedMigrations>,
    /// Every file of the migrations folder (its path inside it, its bytes): the key.
    pub migration_files: &'static [(&'static str, &'static [u8])],
    /// (name, SQL), run in order after the migrations.
    pub fixtures: &'static [(&'static str, &'static str)],
}

/// The seed version of the attribute's cache keys; bump when what a build does changes.
const SEED: &str = concat!(
    "#[diesel_sqlite_backup::test] v1 ",
    env!("CARGO_PKG_VERSION")
);

/// When set, every build appends a line (`<key> <pid>`) to this file: how the tests count
/// migrations runs across processes.
const BUILD_LOG: &str = "DIESEL_SQLITE_BACKUP_BUILD_LOG";

type Slot = Arc<OnceLock<Template>>;
static TEMPLATES: Mutex<Vec<(&'static str, Slot)>> = Mutex::new(Vec::new());

/// The set's template: built (or loaded from the disk cache) by the first test of the process
/// that asks; the others wait for it, then clone.
pub fn template(set: &'static Set) -> Template {
    let slot = {
        let mut all = TEMPLATES.lock().unwrap_or_else(PoisonError::into_inner);
        match all.iter().find(|(id, _)| *id == set.id) {
            Some((_, slot)) => slot.clone(),
            None => {
                let slot = Slot::default();
                all.push((set.id, slot.clone()));
                slot
            }
        }
    };
    slot.get_or_init(|| build(set)).clone()
}

fn build(set: &Set) -> Template {
    let mut cache = TemplateCache::new(SEED);
    for (name, bytes) in set.migration_files {
        cache = cache.key_input(format!("migrations/{name}"), *bytes);
    }
    for (name, sql) in set.fixtures {
        cache = cache.key_input(format!("fixtures/{name}"), sql.as_bytes());
    }
    let built = cache.get_or_build(|conn| {
        if let Some(migrations) = &set.migrations {
            conn.run_pending_migrations(migrations())?;
        }
        for (name, sql) in set.fixtures {
            conn.batch_execute(sql)
                .map_err(|e| format!("fixture {name}: {e}"))?;
        }
        if let Some(log) = std::env::var_os(BUILD_LOG) {
            let line = format!("{} {}\n", cache.key()?, std::process::id());
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?
                .write_all(line.as_bytes())?;
        }
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    });
    built.unwrap_or_else(|e| panic!("building the test template of {}: {e}", set.id))
}

/// A private copy for `&mut SqliteConnection` tests.
pub fn connection(template: &Template, test: &str) -> KeepOnPanic<SqliteConnection> {
    let conn = template
        .connection()
        .unwrap_or_else(|e| panic!("copying the test template: {e}"));
    KeepOnPanic::connection(conn, test)
}

/// A pool holding a private copy, for pool tests.
pub fn pool(template: &Template, test: &str) -> KeepOnPanic<r2d2::Pool<SingletonManager>> {
    let pool = template
        .pool()
        .unwrap_or_else(|e| panic!("copying the test template: {e}"));
    KeepOnPanic::pool(pool, test)
}

/// A private copy for tests that own what they take (a connection, or an async pool): a
/// database of its own, whose guard, holding a pool of it, still has the database when the
/// test dropped what it owned in a panic.
pub fn owned<T: Owned>(
    template: &Template,
    test: &str,
) -> (KeepOnPanic<r2d2::Pool<SingletonManager>>, T) {
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("copying the test template: {e}") };
    let db = MemoryDatabase::new().unwrap_or_else(|e| fail(&e));
    let pool = SingletonManager::pool_builder(1)
        .build(SingletonManager::from_database(db.clone()))
        .unwrap_or_else(|e| fail(&e));
    template
        .copy_into(&mut pool.get().unwrap_or_else(|e| fail(&e)))
        .unwrap_or_else(|e| fail(&e));
    let value = T::open(&db).unwrap_or_else(|e| fail(&e));
    (KeepOnPanic::pool(pool, test), value)
}

/// What a test may take by value, opened on its private database.
#[diagnostic::on_unimplemented(
    message = "`#[diesel_sqlite_backup::test]` cannot give a test a `{Self}`",
    note = "it gives `SqliteConnection`, `&mut SqliteConnection`, `r2d2::Pool<SingletonManager>` \
            and, with the `async` feature, `SyncConnectionWrapper<SqliteConnection>` (or a \
            `&mut` one) and diesel-async's deadpool `Pool<SyncConnectionWrapper<SqliteConnection>>`"
)]
pub trait Owned: Sized {
    /// Opens it on `db`.
    fn open(db: &MemoryDatabase) -> Result<Self, Box<dyn Error + Send + Sync>>;
}

impl Owned for SqliteConnection {
    fn open(db: &MemoryDatabase) -> Result<Self, Box<dyn Error + Send + Sync>> {
        Ok(db.connect()?)
    }
}

#[cfg(feature = "async")]
impl Owned for crate::AsyncSqliteConnection {
    fn open(db: &MemoryDatabase) -> Result<Self, Box<dyn Error + Send + Sync>> {
        Ok(crate::AsyncSqliteConnection::new(db.connect()?))
    }
}

#[cfg(feature = "async")]
impl Owned for diesel_async::pooled_connection::deadpool::Pool<crate::AsyncSqliteConnection> {
    fn open(db: &MemoryDatabase) -> Result<Self, Box<dyn Error + Send + Sync>> {
        Ok(Self::builder(db.async_manager()).build()?)
    }
}

/// Keeps the database of a test that returned `Err` (a panic keeps it in the guard's drop).
pub fn finish<T: Keepable, R: Outcome>(mut guard: KeepOnPanic<T>, result: R) -> R {
    if result.failed() {
        guard.keep_and_say();
    }
    result
}

/// What a test may return.
pub trait Outcome {
    /// True for an `Err`.
    fn failed(&self) -> bool;
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
    }
}

impl<T, E> Outcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}
