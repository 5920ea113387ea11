//! Keep the database of a failing test for inspection.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::SqliteConnection;

use crate::{BackupExt, SingletonManager};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Wraps a test's database (a connection or a [`SingletonManager`] pool) and, if the test
/// panics while it is alive, saves the database to a file and prints where it is and how to
/// open it (`sqlite3 <path>`). On success it does nothing and deletes nothing.
///
/// It derefs to what it wraps, so tests use it as they would the connection or pool.
/// Uncommitted writes of a transaction the panic interrupted are rolled back first: the
/// saved file holds what was committed.
///
/// ```
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::{KeepOnPanic, Template};
///
/// let template = Template::new(|c| diesel::sql_query("CREATE TABLE t(x)").execute(c).map(drop))?;
/// let mut db = KeepOnPanic::connection(template.connection()?, "my_test");
/// diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut *db)?;
/// // A panic here would print: "kept the database of failed test my_test: sqlite3 <path>"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeepOnPanic<T: Keepable> {
    /// Always `Some` until `into_inner` takes it.
    inner: Option<T>,
    name: String,
    dir: PathBuf,
}

impl KeepOnPanic<SqliteConnection> {
    /// Guards a connection; `name` (usually the test's name) starts the saved file's name.
    pub fn connection(conn: SqliteConnection, name: &str) -> Self {
        Self::new(conn, name)
    }
}

impl KeepOnPanic<r2d2::Pool<SingletonManager>> {
    /// Guards a pool's shared database; `name` starts the saved file's name.
    pub fn pool(pool: r2d2::Pool<SingletonManager>, name: &str) -> Self {
        Self::new(pool, name)
    }
}

impl<T: Keepable> KeepOnPanic<T> {
    fn new(inner: T, name: &str) -> Self {
        let dir =
            super::TemplateCache::default_dir().with_file_name("diesel-sqlite-backup-failed-tests");
        KeepOnPanic {
            inner: Some(inner),
            name: name.to_owned(),
            dir,
        }
    }

    /// Saves into `dir` instead of the default
    /// (`diesel-sqlite-backup-failed-tests` next to [`TemplateCache::default_dir`](super::TemplateCache::default_dir)).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// Gives back what was wrapped, disarming the guard.
    pub fn into_inner(mut self) -> T {
        self.inner
            .take()
            .expect("KeepOnPanic holds its value until into_inner")
    }

    fn keep(&mut self) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let safe: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = self.dir.join(format!(
            "{safe}-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match self.inner.as_mut() {
            Some(inner) => inner.save_committed(&file)?,
            None => return Err("nothing to keep".into()),
        }
        Ok(file)
    }
}

impl<T: Keepable> Drop for KeepOnPanic<T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_and_say();
        }
    }
}

impl<T: Keepable> KeepOnPanic<T> {
    /// Keeps the database now and prints where, as a panic would: for a test that failed
    /// by returning `Err`.
    #[doc(hidden)]
    pub fn keep_and_say(&mut self) {
        if self.inner.is_none() {
            return;
        }
        // On standard error always: the test's user reads it next to the failure.
        match self.keep() {
            Ok(path) => {
                eprintln!(
                    "kept the database of failed test {}: sqlite3 {}",
                    self.name,
                    path.display()
                );
                tracing::warn!(test = %self.name, path = %path.display(), "kept the database of a failed test");
            }
            Err(e) => {
                eprintln!(
                    "could not keep the database of failed test {}: {e}",
                    self.name
                );
                tracing::warn!(test = %self.name, error = %e, "could not keep the database of a failed test");
            }
        }
    }
}

impl<T: Keepable> Deref for KeepOnPanic<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.inner
            .as_ref()
            .expect("KeepOnPanic holds its value until into_inner")
    }
}

impl<T: Keepable> DerefMut for KeepOnPanic<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.inner
            .as_mut()
            .expect("KeepOnPanic holds its value until into_inner")
    }
}

/// What [`KeepOnPanic`] can guard. Sealed: implemented for `SqliteConnection` and
/// `r2d2::Pool<SingletonManager>`.
pub trait Keepable: sealed::Sealed {
    #[doc(hidden)]
    fn save_committed(&mut self, path: &Path) -> Result<(), String>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for diesel::SqliteConnection {}
    impl Sealed for r2d2::Pool<crate::SingletonManager> {}
}

impl Keepable for SqliteConnection {
    fn save_committed(&mut self, path: &Path) -> Result<(), String> {
        // A panic inside a transaction leaves it open, and save_as refuses to run then.
        let _ = self.batch_execute("ROLLBACK");
        self.save_as(path).map_err(|e| e.to_string())
    }
}

impl Keepable for r2d2::Pool<SingletonManager> {
    fn save_committed(&mut self, path: &Path) -> Result<(), String> {
        let mut conn = self
            .get_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        conn.save_committed(path)
    }
}
