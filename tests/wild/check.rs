//! What a destination must hold after a route, and the checks that say whether it does.
//! Every check returns the problems it found instead of panicking, so one test can report
//! every failing route at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_sqlite_backup::{memory_pool, BackupExt, SingletonManager};

use super::py;

pub type Pool = r2d2::Pool<SingletonManager>;

/// A hang guard for checkouts from a pool a route may have broken; a healthy checkout
/// takes microseconds.
const CHECKOUT: Duration = Duration::from_secs(10);

/// What a successful route must have copied.
#[derive(Clone, Debug)]
pub enum Expect {
    /// Exactly this canonical dump, and each query (one column named `n`) gives its value
    /// when run by this crate's SQLite on the destination.
    Exact {
        dump: String,
        probes: Vec<(String, i64)>,
    },
    /// A consistent snapshot of the transfers table: `count` accounts summing to `total`.
    Accounts { count: i64, total: i64 },
}

/// What the destination held before the route, and must still hold if the route failed.
#[derive(Clone, Debug)]
pub enum Old {
    /// A fresh pool: no schema at all.
    Empty,
    /// Exactly this canonical dump.
    Dump(String),
}

/// Where a route's copy landed.
pub enum Dest {
    Pool(Pool),
    Conn(SqliteConnection),
}

/// A fresh, empty `memory_pool()`.
pub fn fresh_pool() -> Pool {
    memory_pool().expect("memory_pool")
}

const USED_SQL: &str = "
    CREATE TABLE old_data(id INTEGER PRIMARY KEY, note TEXT NOT NULL);
    CREATE INDEX old_note ON old_data(note);
    WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300)
    INSERT INTO old_data(note) SELECT printf('old %d %.*c', i, 100, 'o') FROM c;";

/// A two-connection `SingletonManager` pool that already holds data (300 rows of
/// `old_data`, 4096-byte pages, UTF-8) and has been queried through both connections.
pub fn used_pool() -> Pool {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(SingletonManager::new())
        .expect("pool");
    let (mut a, mut b) = (pool.get().unwrap(), pool.get().unwrap());
    a.batch_execute(USED_SQL).expect("fill the used pool");
    for conn in [&mut a, &mut b] {
        assert_eq!(scalar(conn, "SELECT count(*) AS n FROM old_data"), Ok(300));
    }
    drop((a, b));
    pool
}

/// The canonical dump of a [`used_pool`], computed once.
pub fn used_dump() -> String {
    static DUMP: OnceLock<String> = OnceLock::new();
    DUMP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut dest = Dest::Pool(used_pool());
        dest_dump(&mut dest, dir.path()).expect("dump of the used pool")
    })
    .clone()
}

/// One `i64` from a query whose single column is named `n`.
pub fn scalar(conn: &mut SqliteConnection, sql: &str) -> Result<i64, String> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<N>(conn)
        .map(|r| r.n)
        .map_err(|e| format!("`{sql}` failed: {e}"))
}

/// `PRAGMA integrity_check`, all lines joined.
pub fn integrity(conn: &mut SqliteConnection) -> Result<String, String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    diesel::sql_query("PRAGMA integrity_check")
        .load::<Row>(conn)
        .map(|rows| {
            rows.into_iter()
                .map(|r| r.integrity_check)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .map_err(|e| format!("integrity_check failed: {e}"))
}

fn exec(conn: &mut SqliteConnection, sql: &str) -> Result<(), String> {
    conn.batch_execute(sql)
        .map_err(|e| format!("`{sql}` failed: {e}"))
}

impl Dest {
    /// Runs `f` on a connection to the destination (a fresh checkout for a pool).
    pub fn with<R>(
        &mut self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<R, String>,
    ) -> Result<R, String> {
        match self {
            Dest::Pool(pool) => {
                let mut conn = pool
                    .get_timeout(CHECKOUT)
                    .map_err(|e| format!("pool checkout failed: {e}"))?;
                f(&mut conn)
            }
            Dest::Conn(conn) => f(conn),
        }
    }
}

/// Saves the destination with `save_as` and returns Python's canonical dump of that file.
pub fn dest_dump(dest: &mut Dest, scratch: &Path) -> Result<String, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let file: PathBuf = scratch.join(format!("dest-{}.db", N.fetch_add(1, Ordering::Relaxed)));
    dest.with(|c| {
        c.save_as(&file)
            .map_err(|e| format!("save_as of the destination failed: {e}"))
    })?;
    let dump = py::dump(&file);
    let _ = std::fs::remove_file(&file);
    Ok(dump)
}

/// A write and a read succeed afterwards, through a second pooled connection too (the
/// pool's only connection, checked out again, for a one-connection pool). The probe table
/// is dropped at the end, so the logical content is unchanged.
pub fn usable(dest: &mut Dest) -> Result<(), String> {
    let count = "SELECT count(*) AS n FROM wild_probe";
    let expect = |conn: &mut SqliteConnection, want: i64| match scalar(conn, count)? {
        n if n == want => Ok(()),
        n => Err(format!("wild_probe holds {n} rows, expected {want}")),
    };
    let first = "CREATE TABLE wild_probe(x TEXT); INSERT INTO wild_probe VALUES ('a');";
    let second = |conn: &mut SqliteConnection| -> Result<(), String> {
        scalar(conn, "SELECT count(*) AS n FROM sqlite_master")?;
        expect(conn, 1)?;
        exec(conn, "INSERT INTO wild_probe VALUES ('b')")
    };
    match dest {
        Dest::Pool(pool) if pool.max_size() >= 2 => {
            let checkout = |pool: &Pool| {
                pool.get_timeout(CHECKOUT)
                    .map_err(|e| format!("pool checkout failed: {e}"))
            };
            let mut a = checkout(pool)?;
            let mut b = checkout(pool)?;
            exec(&mut a, first)?;
            second(&mut b)?;
            expect(&mut a, 2)?;
            exec(&mut a, "DROP TABLE wild_probe")?;
            scalar(&mut b, "SELECT count(*) AS n FROM sqlite_master").map(drop)
        }
        _ => {
            dest.with(|c| exec(c, first))?;
            dest.with(second)?;
            dest.with(|c| expect(c, 2))?;
            dest.with(|c| exec(c, "DROP TABLE wild_probe"))
        }
    }
    .map_err(|e| format!("destination unusable afterwards: {e}"))
}

/// Where two dumps first differ, briefly.
pub fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let at = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let cut = |s: Option<&&str>| s.map_or("<end>".to_string(), |s| s.chars().take(160).collect());
    format!(
        "{} lines expected, {} found; first difference at line {at}: expected {:?}, found {:?}",
        e.len(),
        a.len(),
        cut(e.get(at)),
        cut(a.get(at))
    )
}

/// The destination holds what `expect` says, passes `integrity_check`, and stays usable.
pub fn copied(dest: &mut Dest, expect: &Expect, scratch: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    match dest.with(integrity) {
        Ok(report) if report == "ok" => {}
        Ok(report) => problems.push(format!("integrity_check of the copy: {report}")),
        Err(e) => problems.push(e),
    }
    match expect {
        Expect::Exact { dump, probes } => {
            match dest_dump(dest, scratch) {
                Ok(found) if &found == dump => {}
                Ok(found) => problems.push(format!(
                    "the copy differs from the file: {}",
                    diff(dump, &found)
                )),
                Err(e) => problems.push(e),
            }
            for (sql, want) in probes {
                match dest.with(|c| scalar(c, sql)) {
                    Ok(n) if n == *want => {}
                    Ok(n) => {
                        problems.push(format!("`{sql}` gives {n} on the copy, {want} on the file"))
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        Expect::Accounts { count, total } => {
            let sql = "SELECT count(*) AS n FROM accounts";
            let sum = "SELECT sum(balance) AS n FROM accounts";
            match dest.with(|c| Ok((scalar(c, sql)?, scalar(c, sum)?))) {
                Ok((n, s)) if (n, s) == (*count, *total) => {}
                Ok((n, s)) => problems.push(format!(
                    "not a consistent snapshot: {n} accounts summing to {s}, expected {count} summing to {total}"
                )),
                Err(e) => problems.push(e),
            }
        }
    }
    if let Err(e) = usable(dest) {
        problems.push(e);
    }
    problems
}

/// After a failed route the destination still holds `old`, passes `integrity_check`, and
/// stays usable.
pub fn kept(dest: &mut Dest, old: &Old, scratch: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    match old {
        Old::Empty => match dest.with(|c| scalar(c, "SELECT count(*) AS n FROM sqlite_master")) {
            Ok(0) => {}
            Ok(n) => problems.push(format!("the empty destination now has {n} schema entries")),
            Err(e) => problems.push(format!("old data unreadable: {e}")),
        },
        Old::Dump(want) => match dest_dump(dest, scratch) {
            Ok(found) if &found == want => {}
            Ok(found) => problems.push(format!("old data changed: {}", diff(want, &found))),
            Err(e) => problems.push(format!("old data unreadable: {e}")),
        },
    }
    match dest.with(integrity) {
        Ok(report) if report == "ok" => {}
        Ok(report) => problems.push(format!("integrity_check of the old data: {report}")),
        Err(e) => problems.push(e),
    }
    if let Err(e) = usable(dest) {
        problems.push(e);
    }
    problems
}

/// SQLite's generic texts that say nothing true about why copying a readable file failed
/// (a read reported as a write to a read-only database, a healthy file called malformed).
const UNCLEAR: &[&str] = &[
    "attempt to write a readonly database",
    "unable to open database file",
    "disk I/O error",
    "database disk image is malformed",
    "file is not a database",
    "out of memory",
    "bad parameter or other API misuse",
    "SQL logic error",
    "unknown error",
    "not an error",
    "attached databases must use the same text encoding",
];

/// Why an error message is not a clear account of the failure, if it is not.
pub fn unclear(message: &str) -> Option<String> {
    if message.trim().is_empty() {
        return Some("empty message".into());
    }
    UNCLEAR
        .iter()
        .find(|text| message.contains(*text))
        .map(|text| format!("SQLite's generic {text:?}"))
}
