//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[path = "../../examples/common/mod.rs"]
pub mod app;
pub mod strace;

use std::path::{Path, PathBuf};

use diesel::prelude::*;
use diesel_sqlite_backup::{memory_pool, SingletonManager};

pub type Pool = r2d2::Pool<SingletonManager>;

/// A migrated in-memory pool holding `notes` notes of `body_len` bytes.
pub fn filled_pool(notes: usize, body_len: usize) -> Pool {
    let pool = memory_pool().expect("pool");
    let mut conn = pool.get().expect("conn");
    app::migrate(&mut conn);
    if notes > 0 {
        app::fill(&mut conn, "filled", notes, body_len);
    }
    drop(conn);
    pool
}

/// A pool of `size` connections on one empty shared database, on the crate's shared
/// scheduler.
pub fn pool_of(size: u32) -> Pool {
    r2d2::Pool::builder()
        .max_size(size)
        .thread_pool(diesel_sqlite_backup::shared_thread_pool())
        .build(SingletonManager::new())
        .unwrap()
}

/// Runs `python3 -c script args...` to completion and returns its standard output; panics
/// with its standard error if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Rows in the table `words` of the files [`python_words_file`] makes.
pub const PYTHON_WORDS: i64 = 50;

/// A UTF-8 database file written and closed by Python's `sqlite3` module: [`PYTHON_WORDS`]
/// rows of non-ASCII text in `words(id, word)`, with an index on `word`. With `encoding_field`,
/// the header's text-encoding field (bytes 56..60) is then overwritten with that value, as
/// other writers or bit rot may leave it. Returns the file's bytes.
pub fn python_words_file(path: &Path, encoding_field: Option<u32>) -> Vec<u8> {
    python(
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         c.execute('CREATE TABLE words(id INTEGER PRIMARY KEY, word TEXT NOT NULL)')\n\
         c.execute('CREATE INDEX words_word ON words(word)')\n\
         c.executemany('INSERT INTO words(word) VALUES (?)', [('Grüße %d' % i,) for i in range(50)])\n\
         c.commit()\n\
         c.close()\n",
        &[path.to_str().unwrap()],
    );
    let mut bytes = std::fs::read(path).unwrap();
    if let Some(field) = encoding_field {
        bytes[56..60].copy_from_slice(&field.to_be_bytes());
        std::fs::write(path, &bytes).unwrap();
    }
    bytes
}

/// How a fresh Python process reads a [`python_words_file`]: its row count and encoding.
pub fn python_reads_words(path: &Path) -> String {
    python(
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         n = c.execute(\"SELECT count(*) FROM words WHERE word LIKE 'Grüße %'\").fetchone()[0]\n\
         print(n, c.execute('PRAGMA encoding').fetchone()[0])\n",
        &[path.to_str().unwrap()],
    )
}

/// Files Python wrote into `dir` whose header encoding field says 4, 8 or 256, which SQLite
/// (and so Python) reads as UTF-8: `(field, path, bytes)`.
pub fn odd_encoding_files(dir: &Path) -> Vec<(u32, PathBuf, Vec<u8>)> {
    [4u32, 8, 256]
        .into_iter()
        .map(|field| {
            let file = dir.join(format!("field-{field}.db"));
            let bytes = python_words_file(&file, Some(field));
            assert_eq!(python_reads_words(&file), "50 UTF-8", "field {field}");
            (field, file, bytes)
        })
        .collect()
}

/// `open` loads such a file into a fresh pool and into one holding other notes, with and
/// without `verify_integrity`: each pool then holds the words, and a later Open by `reopen`
/// (of the 5-note document) works.
pub fn assert_odd_encoding_loads(
    what: &str,
    open: impl Fn(
        &mut SqliteConnection,
        diesel_sqlite_backup::BackupOptions,
    ) -> Result<(), diesel_sqlite_backup::BackupError>,
    reopen: impl Fn(&mut SqliteConnection) -> Result<(), diesel_sqlite_backup::BackupError>,
) {
    for (used, verify) in [(false, false), (false, true), (true, false), (true, true)] {
        let what = format!("{what}, used {used}, verify {verify}");
        let pool = pool_of(2);
        if used {
            app::migrate(&mut pool.get().unwrap());
            app::fill(&mut pool.get().unwrap(), "old", 3, 10);
        }
        let options = diesel_sqlite_backup::BackupOptions::default().verify_integrity(verify);
        open(&mut pool.get().unwrap(), options).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_holds_words(&pool, &what);
        reopen(&mut pool.get().unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(app::note_count(&mut pool.get().unwrap()), 5, "{what}");
    }
}

/// Two connections of `pool` at once (where it has two) read the rows of a
/// [`python_words_file`], one writes and the other sees it, `integrity_check` passes, and
/// page 1's encoding field is UTF-8's (1), as SQLite itself writes it.
pub fn assert_holds_words(pool: &Pool, what: &str) {
    use diesel::connection::SimpleConnection;
    use diesel_sqlite_backup::BackupExt;
    let sql = "SELECT count(*) AS n FROM words WHERE word LIKE 'Grüße %'";
    let mut a = pool.get().unwrap();
    let mut other = (pool.max_size() >= 2).then(|| pool.get().unwrap());
    assert_eq!(scalar(&mut a, sql), PYTHON_WORDS, "{what}");
    if let Some(b) = other.as_mut() {
        assert_eq!(scalar(b, sql), PYTHON_WORDS, "{what}");
    }
    a.batch_execute("INSERT INTO words(word) VALUES ('added')")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let b: &mut SqliteConnection = match other.as_mut() {
        Some(b) => b,
        None => &mut a,
    };
    let all = scalar(b, "SELECT count(*) AS n FROM words");
    assert_eq!(all, PYTHON_WORDS + 1, "{what}");
    assert_eq!(integrity_of(b), "ok", "{what}");
    let image = b.snapshot().unwrap();
    assert_eq!(image[56..60], 1u32.to_be_bytes(), "{what}: encoding field");
}

/// A python3 child holding a transaction open on a database file, in rollback-journal mode,
/// until it is told to commit, or rolls back when dropped.
pub struct LockHolder(std::process::Child);

impl LockHolder {
    /// Holds an EXCLUSIVE lock on `path` (`BEGIN EXCLUSIVE`), creating the file if need be.
    pub fn lock(path: &Path) -> LockHolder {
        Self::hold(
            path,
            "BEGIN EXCLUSIVE",
            "CREATE TABLE IF NOT EXISTS held(x)",
        )
    }

    /// Runs `begin`, then `write`, on `path` and keeps that transaction open.
    pub fn hold(path: &Path, begin: &str, write: &str) -> LockHolder {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let script = "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=DELETE')\n\
             c.execute(sys.argv[2])\n\
             c.execute(sys.argv[3])\n\
             print('locked', flush=True)\n\
             if sys.stdin.readline().strip() == 'commit':\n\
             \x20   c.execute('COMMIT')\n";
        let mut child = Command::new("python3")
            .args(["-c", script, path.to_str().unwrap(), begin, write])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        LockHolder(child)
    }

    /// Commits the transaction and waits for the child to exit.
    pub fn commit(mut self) {
        use std::io::Write;
        let mut stdin = self.0.stdin.take().unwrap();
        stdin.write_all(b"commit\n").unwrap();
        drop(stdin);
        assert!(
            self.0.wait().unwrap().success(),
            "the holder failed to commit"
        );
    }
}

impl Drop for LockHolder {
    /// Closes the child's stdin: it exits without committing, so its transaction rolls back
    /// and leaves no journal behind.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Opens a database file with a plain connection and counts its notes.
pub fn notes_in_file(path: &Path) -> i64 {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).expect("open saved file");
    app::note_count(&mut conn)
}

/// `PRAGMA integrity_check` of a database file.
pub fn integrity(path: &Path) -> String {
    integrity_of(&mut SqliteConnection::establish(path.to_str().unwrap()).expect("open file"))
}

/// Every entry of `dir` whose name marks it as a save's temporary file.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.to_string_lossy()
                .ends_with(diesel_sqlite_backup::TEMP_SUFFIX)
        })
        .collect()
}

/// The temporary files in `dir` that hold data. A save killed between creating its temporary
/// file and locking it leaves an empty one, which the next save may not tell from one being
/// created right now, so empty ones are only removed once a minute old.
pub fn temp_files_with_data(dir: &Path) -> Vec<PathBuf> {
    temp_files(dir)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect()
}

/// One `i64` from a query whose single column is named `n`.
pub fn scalar(conn: &mut SqliteConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).expect(sql).n
}

/// `PRAGMA integrity_check` through an open connection.
pub fn integrity_of(conn: &mut SqliteConnection) -> String {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let rows: Vec<Row> = diesel::sql_query("PRAGMA integrity_check")
        .load(conn)
        .expect("integrity_check");
    rows.into_iter()
        .map(|r| r.integrity_check)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs test `name` alone in a child process of this test binary, so process-wide state
/// (RSS, the crate's one-time set-up) is not shared with tests running in parallel.
/// Returns true inside the child, where the caller runs the test body.
pub fn in_own_process(name: &str) -> bool {
    const CHILD: &str = "DSB_ISOLATED_TEST";
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return true;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "isolated test {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1 passed"),
        "isolated test {name} did not run:\n{stdout}"
    );
    false
}

/// A python3 program: `python3 -c SCRIPT FILE SECONDS` opens FILE again and again for
/// SECONDS and checks, in one read transaction, that `total.n` equals the rows of `item`.
/// Prints `ok <reads>` or the first torn state, and exits 1 on a torn state.
pub fn python_ledger_reader() -> &'static str {
    r#"
import sqlite3, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
end, reads = time.time() + seconds, 0
while time.time() < end:
    try:
        c = sqlite3.connect(path, timeout=10)
        c.execute("BEGIN")
        items = c.execute("SELECT count(*) FROM item").fetchone()[0]
        total = c.execute("SELECT n FROM total").fetchone()[0]
        c.execute("COMMIT")
        c.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            continue
        raise
    if items != total:
        print("torn", items, total)
        sys.exit(1)
    reads += 1
print("ok", reads)
"#
}
