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
