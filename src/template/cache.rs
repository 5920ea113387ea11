//! A template built once per machine and loaded by every test process, for runners that
//! start one process per test.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use super::{Template, OP};
use crate::error::BackupError;
use crate::BackupExt;

/// Bumped when the cache's file layout or the key's inputs change, so old files are never
/// reused. v2: each file is keyed by the index of the registered folder it came from, not
/// only by its path inside that folder.
const FORMAT: &str = "diesel-sqlite-backup template cache v2";

/// Builds a [`Template`] once and stores it as a database file; later processes load the file
/// instead of migrating again.
///
/// The file is named by a hash of every file under the migrations directories you register
/// (for each file: which registered directory holds it, its path inside that directory and
/// its contents, so a changed, added, removed or moved migration gives a new key, never a
/// stale template) and of your seed version (bump it when `init` seeds different data). Several processes that
/// build the same key at once are safe: each saves through [`save_as`](crate::BackupExt::save_as),
/// which renames a complete file into place, so readers see a whole template or none.
///
/// ```
/// use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
/// use diesel_sqlite_backup::TemplateCache;
///
/// const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
///
/// # let dir = tempfile::tempdir()?;
/// let cache = TemplateCache::new("seed-v1")
///     .migrations_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
/// #   .dir(dir.path())
///     ;
/// let template = cache.get_or_build(|conn| conn.run_pending_migrations(MIGRATIONS).map(drop))?;
/// let mut db = template.connection()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TemplateCache {
    dir: PathBuf,
    seed_version: String,
    migration_dirs: Vec<PathBuf>,
    /// Named inputs given by [`key_input`](Self::key_input), in order.
    inputs: Vec<(String, Vec<u8>)>,
}

impl TemplateCache {
    /// A cache for templates seeded as `seed_version`, stored in [`default_dir`](Self::default_dir).
    pub fn new(seed_version: impl Into<String>) -> Self {
        TemplateCache {
            dir: Self::default_dir(),
            seed_version: seed_version.into(),
            migration_dirs: Vec::new(),
            inputs: Vec::new(),
        }
    }

    /// `$DIESEL_SQLITE_BACKUP_TEMPLATES` when set, else
    /// `$CARGO_TARGET_DIR/diesel-sqlite-backup-templates`, else
    /// `$CARGO_MANIFEST_DIR/target/diesel-sqlite-backup-templates` (cargo and nextest set
    /// `CARGO_MANIFEST_DIR` for tests), else the same folder under the system temp dir.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("DIESEL_SQLITE_BACKUP_TEMPLATES") {
            return PathBuf::from(dir);
        }
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("CARGO_MANIFEST_DIR").map(|d| Path::new(&d).join("target"))
            })
            .unwrap_or_else(std::env::temp_dir);
        base.join("diesel-sqlite-backup-templates")
    }

    /// Stores templates in `dir` instead of the default.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// Adds every file under `dir` (a diesel_migrations folder) to the key.
    pub fn migrations_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.migration_dirs.push(dir.into());
        self
    }

    /// Adds `contents` under `name` to the key: an input that is not a file under a
    /// registered folder, such as a fixture's SQL or migrations embedded in the binary.
    ///
    /// ```
    /// use diesel_sqlite_backup::TemplateCache;
    ///
    /// let users = |sql: &str| TemplateCache::new("seed-v1").key_input("users.sql", sql);
    /// let key = users("INSERT INTO users VALUES (1);").key()?;
    /// assert_eq!(key, users("INSERT INTO users VALUES (1);").key()?);
    /// assert_ne!(key, users("INSERT INTO users VALUES (2);").key()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key_input(mut self, name: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.inputs.push((name.into(), contents.into()));
        self
    }

    /// The cache key: 32 hex digits over the format, the seed version, the migrations and
    /// the [`key_input`](Self::key_input)s (each by name and contents, in order).
    ///
    /// Every file under the registered directories counts with three things: the index of
    /// its directory in registration order, its path relative to that directory (with `/`
    /// separators) and its contents. Where the directories live does not count, so two
    /// checkouts of one project share a key; moving a migration from one registered
    /// directory to another, or registering the directories in another order, changes it.
    ///
    /// ```
    /// use diesel_sqlite_backup::TemplateCache;
    ///
    /// let root = tempfile::tempdir()?;
    /// let (a, b) = (root.path().join("a"), root.path().join("b"));
    /// std::fs::create_dir_all(a.join("001_users"))?;
    /// std::fs::create_dir_all(b.join("002_posts"))?;
    /// std::fs::write(a.join("001_users/up.sql"), "CREATE TABLE users (id INTEGER);")?;
    /// std::fs::write(b.join("002_posts/up.sql"), "CREATE TABLE posts (id INTEGER);")?;
    ///
    /// let cache = TemplateCache::new("seed-v1").migrations_dir(&a).migrations_dir(&b);
    /// let key = cache.key()?;
    /// assert_eq!(key.len(), 32);
    /// assert_eq!(key, cache.key()?); // nothing changed, same key
    ///
    /// std::fs::rename(b.join("002_posts"), a.join("002_posts"))?;
    /// assert_ne!(key, cache.key()?); // same file, other folder: a new key
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> Result<String, BackupError> {
        let mut hash = KeyHasher::default();
        hash.write(FORMAT.as_bytes());
        hash.write(self.seed_version.as_bytes());
        for (index, dir) in self.migration_dirs.iter().enumerate() {
            let mut files = Vec::new();
            collect_files(dir, &mut files)?;
            files.sort();
            for file in files {
                let contents =
                    fs::read(&file).map_err(|e| BackupError::io(OP, &file, "read", e))?;
                hash.write(&(index as u64).to_le_bytes());
                hash.write(relative_name(dir, &file).as_bytes());
                hash.write(&contents);
            }
        }
        for (name, contents) in &self.inputs {
            // 5 bytes, where a file's first write is 8: never read as one.
            hash.write(b"input");
            hash.write(name.as_bytes());
            hash.write(contents);
        }
        Ok(hash.finish_hex())
    }

    /// Where the template for the current key lives.
    pub fn path(&self) -> Result<PathBuf, BackupError> {
        Ok(self.dir.join(format!("template-{}.db", self.key()?)))
    }

    /// Loads the cached template, or runs `init` on a fresh database, stores the result and
    /// returns it. A cached file that fails the checks of
    /// [`restore_from`](crate::BackupExt::restore_from) is rebuilt, not used.
    ///
    /// On Unix, builders of one key (threads or processes) take turns through an `flock` on
    /// `template-<key>.lock`: the first builds, the others then load its file, so `init`
    /// runs once per key even when a runner starts many test processes at once.
    pub fn get_or_build<F, E>(&self, init: F) -> Result<Template, BackupError>
    where
        F: FnOnce(&mut diesel::SqliteConnection) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = self.path()?;
        let _span = tracing::info_span!("template_cache", path = %path.display()).entered();
        // Every file the cache writes has at least one page (SQLite writes page 1 of any
        // database it saves): an empty one was cut short or made by someone else.
        let load = || match fs::metadata(&path) {
            Ok(m) if m.len() > 0 => Template::from_file(&path).ok(),
            _ => None,
        };
        if path.is_file() {
            if let Some(template) = load() {
                tracing::debug!("template loaded from the cache");
                return Ok(template);
            }
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| BackupError::io(OP, &self.dir, "create directory", e))?;
        let _turn = build_lock(&path.with_extension("lock"));
        if path.is_file() {
            if let Some(template) = load() {
                return Ok(template);
            }
        }
        tracing::debug!("no usable cached template: building it");
        let template = Template::new(init)?;
        template.connection()?.save_as(&path)?;
        Ok(template)
    }
}

/// An exclusive `flock` on `lock`, released when the file is dropped; `None` when it cannot
/// be had (the caller then builds without waiting, which is only slower).
#[cfg(unix)]
fn build_lock(lock: &Path) -> Option<fs::File> {
    use std::os::fd::AsRawFd;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .ok()?;
    loop {
        // SAFETY: flock only reads the descriptor, which `file` owns and keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Some(file);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

#[cfg(not(unix))]
fn build_lock(_lock: &Path) -> Option<fs::File> {
    None
}

/// `file`'s path inside `dir`, its components joined by `/` on every platform.
fn relative_name(dir: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(dir).unwrap_or(file);
    let parts: Vec<_> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BackupError> {
    let entries = fs::read_dir(dir).map_err(|e| BackupError::io(OP, dir, "read directory", e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| BackupError::io(OP, dir, "read directory", e))?
            .path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Two independent 64-bit hashes (FNV-1a and SipHash), for a 128-bit key. Each input is
/// length-prefixed so that ("ab", "c") and ("a", "bc") differ.
struct KeyHasher {
    fnv: u64,
    sip: DefaultHasher,
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher {
            fnv: 0xcbf2_9ce4_8422_2325,
            sip: DefaultHasher::new(),
        }
    }
}

impl KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let len = (bytes.len() as u64).to_le_bytes();
        for &b in len.iter().chain(bytes) {
            self.fnv = (self.fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.sip.write(&len);
        self.sip.write(bytes);
    }

    fn finish_hex(&self) -> String {
        format!("{:016x}{:016x}", self.fnv, self.sip.finish())
    }
}
