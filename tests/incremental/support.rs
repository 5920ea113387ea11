//! Helpers for the incremental-save tests: a two-table ledger whose invariant a torn file
//! would break, byte and content comparisons, and write accounting.

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions};

pub type Pool = r2d2::Pool<diesel_sqlite_backup::SingletonManager>;

/// The total across both tables, in every consistent state.
pub const TOTAL: i64 = 1_000_000;

/// A pool holding `rows` rows in each of `a` and `b` (about 260 bytes each), with indexes.
pub fn ledger(rows: usize) -> Pool {
    let pool = memory_pool().unwrap();
    fill_ledger(&pool, rows);
    pool
}

/// Fills `pool`'s empty database as [`ledger`] does.
pub fn fill_ledger(pool: &Pool, rows: usize) {
    let mut c = pool.get().unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE a(id INTEGER PRIMARY KEY, bal INTEGER, pad BLOB);
         CREATE TABLE b(id INTEGER PRIMARY KEY, bal INTEGER, pad BLOB);
         CREATE INDEX a_bal ON a(bal);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO a SELECT i, 0, randomblob(250) FROM n;
         INSERT INTO b SELECT id, 0, randomblob(250) FROM a;
         UPDATE a SET bal = {TOTAL} WHERE id = 1;"
    ))
    .unwrap();
}

/// Moves money between the tables for about `percent`% of the rows (a contiguous run starting
/// at `seed`'s position), keeping [`TOTAL`].
pub fn transfer(c: &mut SqliteConnection, rows: usize, percent: f64, seed: u64) {
    let n = ((rows as f64 * percent / 100.0).ceil() as usize).max(1);
    let start = (seed as usize * 7919) % rows.saturating_sub(n).max(1) + 1;
    c.batch_execute(&format!(
        "BEGIN;
         UPDATE a SET bal = bal - 1, pad = randomblob(250) WHERE id BETWEEN {start} AND {end};
         UPDATE b SET bal = bal + 1, pad = randomblob(250) WHERE id BETWEEN {start} AND {end};
         COMMIT;",
        end = start + n - 1
    ))
    .unwrap();
}

/// The incremental save options.
pub fn incremental<'a>() -> BackupOptions<'a> {
    BackupOptions::default().incremental(true)
}

/// This process's bytes written so far (`wchar` of `/proc/self/io`): every write(2),
/// pwrite(2) and friends, whatever file.
pub fn wchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Bytes written by this process while `f` runs.
pub fn bytes_written(f: impl FnOnce()) -> u64 {
    let before = wchar();
    f();
    wchar() - before
}

/// (device, inode) of a file.
pub fn inode(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// Asserts the file at `path` holds exactly the pool's database: the same bytes page for
/// page, except the header fields a save sets (change counter, schema cookie,
/// version-valid-for, SQLite version), and the same canonical dump as seen by Python's SQLite.
pub fn assert_file_equals_memory(pool: &Pool, path: &Path, what: &str) {
    let memory = pool.get().unwrap().snapshot().unwrap().into_vec();
    let file = std::fs::read(path).unwrap();
    assert_eq!(
        file.len(),
        memory.len(),
        "{what}: file size differs from memory"
    );
    let masked = |b: &[u8]| {
        let mut v = b.to_vec();
        v[24..28].fill(0);
        v[40..44].fill(0);
        v[92..100].fill(0);
        v
    };
    if masked(&file) != masked(&memory) {
        let ps = u16::from_be_bytes([memory[16], memory[17]]) as usize;
        let bad: Vec<usize> = (0..memory.len() / ps)
            .filter(|&p| {
                masked(&file)[p * ps..(p + 1) * ps] != masked(&memory)[p * ps..(p + 1) * ps]
            })
            .map(|p| p + 1)
            .collect();
        let (f, m) = (masked(&file), masked(&memory));
        let bytes: Vec<(usize, u8, u8)> = (0..ps)
            .filter(|&i| f[i] != m[i])
            .map(|i| (i, f[i], m[i]))
            .take(10)
            .collect();
        panic!("{what}: pages differ from memory: {bad:?}; page 1 bytes (offset, file, memory): {bytes:?}");
    }
    // The memory's content as a file, without a save (which would move the baseline).
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    std::fs::write(&fresh, &memory).unwrap();
    assert_eq!(
        crate::py::dump(path),
        crate::py::dump(&fresh),
        "{what}: content differs"
    );
    assert_eq!(
        crate::py::scalar(path, "PRAGMA integrity_check"),
        "ok",
        "{what}"
    );
}

/// The ledger invariant as Python's SQLite sees the file (recovering any hot journal).
pub fn python_total(path: &Path) -> i64 {
    crate::py::scalar(
        path,
        "SELECT (SELECT sum(bal) FROM a) + (SELECT sum(bal) FROM b)",
    )
    .parse()
    .unwrap()
}

pub use crate::common::scalar;

/// Runs the test body in a child process of its own, so `wchar` counts only its writes.
pub use crate::common::in_own_process as alone;

/// Asserts that a plain SQLite (Python's, which rolls back any hot journal on open) finds
/// the file at `path` intact and the ledger's invariant whole: what every kill must leave.
pub fn assert_recovered(path: &Path, what: &str) {
    assert_eq!(
        crate::py::scalar(path, "PRAGMA integrity_check"),
        "ok",
        "{what}"
    );
    assert_eq!(python_total(path), TOTAL, "{what}: torn");
}

/// Saves the pool incrementally into `path`; true if every page was written (a full save).
/// Counts this process's writes: call it only from a test that runs `alone`.
pub fn saved_in_full(pool: &Pool, path: &std::path::Path) -> bool {
    let mut c = pool.get().unwrap();
    let written = bytes_written(|| c.save_as_with(path, incremental()).unwrap());
    written >= std::fs::metadata(path).unwrap().len()
}

/// Runs this binary's test `child` with `env` set, and asserts that it ended by SIGKILL (the
/// child kills itself at a chosen moment of a save).
pub fn run_child_until_killed(child: &str, env: (&str, String), what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: child ended otherwise"
    );
}
