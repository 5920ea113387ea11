//! Test templates: migrate once, then hand every test its own copy in microseconds.

#[cfg(feature = "macros")]
pub(crate) mod attribute;
mod cache;
mod guard;

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use diesel::{Connection, SqliteConnection};
use libsqlite3_sys as ffi;

pub use cache::TemplateCache;
pub use guard::{KeepOnPanic, Keepable};

use crate::error::BusyReason;
use crate::error::{BackupError, Operation};
use crate::sqlite::OwnedDb;
use crate::{BackupExt, BackupOptions, SingletonManager};

const OP: Operation = Operation::Template;

/// A migrated (and seeded) database kept in memory as an image, from which every test
/// gets a private copy.
///
/// Build it once per process, for example in a `static`
/// [`LazyLock`](std::sync::LazyLock), then call [`connection`](Template::connection) or
/// [`pool`](Template::pool) in each test. Copies never share data with the template or
/// with each other. For runners that start one process per test (`cargo nextest`), use
/// [`TemplateCache`] so the migrations run once per machine rather than once per process.
///
/// ```
/// use std::sync::LazyLock;
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::Template;
///
/// static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
///     Template::new(|conn| {
///         diesel::sql_query("CREATE TABLE t(x)").execute(conn)?;
///         diesel::sql_query("INSERT INTO t VALUES (1)").execute(conn)?;
///         Ok::<_, diesel::result::Error>(())
///     })
///     .expect("template")
/// });
///
/// let count = |conn: &mut diesel::SqliteConnection| {
///     diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("(SELECT count(*) FROM t)"))
///         .get_result::<i64>(conn)
/// };
/// let mut a = TEMPLATE.connection()?;
/// let mut b = TEMPLATE.connection()?;
/// diesel::sql_query("DELETE FROM t").execute(&mut a)?;
/// assert_eq!(count(&mut a)?, 0);
/// assert_eq!(count(&mut b)?, 1); // b is untouched
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Template {
    image: Arc<[u8]>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("bytes", &self.image.len())
            .finish()
    }
}

impl Template {
    /// Runs `init` once on a fresh in-memory database (migrations, seed data, anything) and
    /// keeps the result as the template.
    ///
    /// # Errors
    /// [`BackupError::Init`] with `init`'s own error when it fails; SQLite errors otherwise.
    pub fn new<F, E>(init: F) -> Result<Template, BackupError>
    where
        F: FnOnce(&mut SqliteConnection) -> Result<(), E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        build("init", || {
            let mut conn = fresh_connection()?;
            init(&mut conn).map_err(|e| BackupError::init(OP, e))?;
            Self::from_connection(&mut conn)
        })
    }

    /// A template holding the database file at `path`, checked the way
    /// [`restore_from`](crate::BackupExt::restore_from) checks files.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Template, BackupError> {
        build("file", || {
            let mut conn = fresh_connection()?;
            conn.restore_from(path)?;
            Self::from_connection(&mut conn)
        })
    }

    /// A template holding the database image `bytes` (a [`Snapshot`](crate::Snapshot), or
    /// `include_bytes!` of a fixture file), checked the way
    /// [`restore_from_bytes`](crate::BackupExt::restore_from_bytes) checks bytes.
    ///
    /// ```
    /// use diesel::{Connection, RunQueryDsl, SqliteConnection};
    /// use diesel_sqlite_backup::{BackupExt, Template};
    ///
    /// let mut seed = SqliteConnection::establish(":memory:")?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut seed)?;
    /// let template = Template::from_bytes(&seed.snapshot()?)?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut template.connection()?)?;
    /// assert!(Template::from_bytes(b"garbage").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Template, BackupError> {
        build("bytes", || {
            let mut conn = fresh_connection()?;
            conn.restore_from_bytes(bytes)?;
            Self::from_connection(&mut conn)
        })
    }

    /// A template holding a copy of `conn`'s `main` database as it is now.
    pub fn from_connection(conn: &mut SqliteConnection) -> Result<Template, BackupError> {
        let db = crate::sqlite::raw_handle(conn);
        let image = match db.serialize_main() {
            Some(mut image) => {
                // No in-memory copy can open an image whose header says WAL.
                crate::format::header::mark_rollback(&mut image);
                image
            }
            // SQLite returns no image for an empty database, but also when it could not
            // read one (locked, out of memory): only the first may become an empty template.
            None => {
                let busy = |reason| BackupError::Busy {
                    op: OP,
                    path: db.display_path(c"main"),
                    waited: std::time::Duration::ZERO,
                    reason,
                };
                match db.query_i64("PRAGMA main.page_count") {
                    Ok(0) => Vec::new(),
                    Ok(_) => return Err(busy(BusyReason::ImageUnavailable)),
                    Err(f) if matches!(f.code, ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED) => {
                        return Err(busy(BusyReason::Locked(f)))
                    }
                    Err(f) => return Err(sqlite(f)),
                }
            }
        };
        Ok(Template {
            image: image.into(),
        })
    }

    /// The size of the template's database image in bytes.
    pub fn len(&self) -> usize {
        self.image.len()
    }

    /// True when the template holds an empty database.
    pub fn is_empty(&self) -> bool {
        self.image.is_empty()
    }

    /// A private, writable in-memory copy of the template. Writes to it never
    /// reach the template or any other copy.
    pub fn connection(&self) -> Result<SqliteConnection, BackupError> {
        let _span = self.clone_span("deserialize").entered();
        let mut conn = fresh_connection()?;
        if !self.image.is_empty() {
            let db = crate::sqlite::raw_handle(&mut conn);
            db.deserialize_main(&self.image).map_err(sqlite)?;
        }
        Ok(conn)
    }

    /// A fresh [`SingletonManager`] pool whose shared database starts as a copy of the
    /// template: shared by that pool's connections, isolated from every other copy.
    pub fn pool(&self) -> Result<r2d2::Pool<SingletonManager>, BackupError> {
        let pool_error = |e: r2d2::Error| BackupError::init(OP, e);
        let pool = crate::pool::build(1).map_err(pool_error)?;
        let mut conn = pool.get().map_err(pool_error)?;
        self.copy_into(&mut conn)?;
        drop(conn);
        Ok(pool)
    }

    /// Replaces `dest`'s `main` database with a copy of the template, through the backup API
    /// (so it works for shared in-memory databases, which `sqlite3_deserialize` would make
    /// private).
    pub fn copy_into(&self, dest: &mut SqliteConnection) -> Result<(), BackupError> {
        if self.image.is_empty() {
            return Ok(());
        }
        let _span = self.clone_span("backup").entered();
        // URI names on, so that a page-size conversion can VACUUM INTO a memdb URI.
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_URI;
        let source = OwnedDb::open(c":memory:", flags).map_err(sqlite)?;
        // SAFETY: `self.image` is immutable and outlives `source`, which is closed at the end
        // of this function.
        unsafe { source.db().borrow_image_readonly(&self.image) }.map_err(sqlite)?;
        let mut options = BackupOptions::default().pages_per_step(0);
        crate::copy::copy_between(&source.db(), dest, &mut options, OP)
    }
}

impl Template {
    /// A copy of the template is made: one debug span, since tests make one each.
    fn clone_span(&self, route: &'static str) -> tracing::Span {
        tracing::debug_span!("template_clone", route, bytes = self.image.len() as u64)
    }
}

/// A template is built from `source` ("init", "file", "bytes") in a `template_build` span.
fn build(
    source: &'static str,
    f: impl FnOnce() -> Result<Template, BackupError>,
) -> Result<Template, BackupError> {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "template_build",
        source,
        bytes = Empty,
        elapsed_ms = Empty,
        error = Empty
    );
    crate::observe::in_span(span, || {
        let template = f()?;
        crate::observe::record("bytes", template.len() as u64);
        Ok(template)
    })
}

fn fresh_connection() -> Result<SqliteConnection, BackupError> {
    SqliteConnection::establish(":memory:").map_err(|e| BackupError::init(OP, e))
}

fn sqlite(failure: crate::SqliteFailure) -> BackupError {
    BackupError::Sqlite {
        op: OP,
        path: ":memory:".into(),
        failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn template_is_send_and_sync() {
        assert_send_sync::<Template>();
    }
}
