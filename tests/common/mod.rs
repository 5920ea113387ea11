//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[path = "../../examples/common/mod.rs"]
pub mod app;

use std::path::{Path, PathBuf};

use diesel::prelude::*;
use diesel_sqlite_backup::{establish, memory_pool, SingletonManager};

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
    let mut conn = establish(path.to_str().unwrap()).expect("open saved file");
    app::note_count(&mut conn)
}

/// `PRAGMA integrity_check` of a database file.
pub fn integrity(path: &Path) -> String {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let mut conn = establish(path.to_str().unwrap()).expect("open file");
    let rows: Vec<Row> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut conn)
        .expect("integrity_check");
    rows.into_iter().map(|r| r.integrity_check).collect::<Vec<_>>().join("\n")
}

/// Every entry of `dir` whose name marks it as a save's temporary file.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(diesel_sqlite_backup::TEMP_SUFFIX))
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
