//! The operations the explorer records, one per route that writes a user's file. Each runs in
//! a child process under strace: it sets up the old version of the file, marks the start,
//! runs the one call whose power loss is explored, and marks the end (the call returned).

use std::path::Path;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_query;
use diesel_sqlite_backup::{
    memory_pool, Autosave, AutosaveOptions, BackupExt, BackupOptions, SingletonManager,
    TemplateCache,
};

/// Every route that writes a user's file, by the name the test and the child share.
/// Saves by rename: the old file is replaced whole.
pub const RENAME_ROUTES: &[&str] = &[
    "save_as",
    "save_as_over_hot_journal",
    "save_as_over_wal",
    "snapshot",
    "template_cache",
];

/// Saves in place, whole or incremental.
pub const IN_PLACE_ROUTES: &[&str] = &[
    "full_in_place",
    "full_in_place_shrink",
    "over_python_file",
    "incremental_update",
    "incremental_growth",
    "incremental_shrink",
];

/// Autosave's saves: its first (in `start`) and a later one.
/// And an Open's save of the commits before it.
pub const AUTOSAVE_ROUTES: &[&str] = &["autosave", "autosave_start", "open_flush"];

/// The page sizes explored: SQLite's smallest, its default, and two larger ones.
pub const PAGE_SIZES: &[u32] = &[512, 4096, 8192, 65536];

/// The file each route writes, in `dir`.
pub fn target(route: &str, dir: &Path, page_size: u32) -> std::path::PathBuf {
    match route {
        "template_cache" => cache(dir, page_size).path().unwrap(),
        _ => dir.join("doc.db"),
    }
}

fn cache(dir: &Path, page_size: u32) -> TemplateCache {
    TemplateCache::new(format!("power-loss-{page_size}")).dir(dir)
}

/// Files the parent makes before the child runs (they are the old version), each written by
/// Python's own SQLite.
pub fn prepare(route: &str, dir: &Path, page_size: u32) {
    let path = dir.join("doc.db");
    match route {
        // UTF-16, another page size, larger than what replaces it.
        "over_python_file" => {
            let other_size = if page_size == 65536 {
                1024
            } else {
                page_size * 2
            };
            python(
                "con.execute(\"PRAGMA encoding='UTF-16le'\")\n\
                 create(con)\n\
                 con.close()",
                &path,
                other_size,
                rows_for(other_size, 12),
            );
        }
        // Python died while writing: its transaction spilled pages into the file, and its
        // `-journal` is hot.
        "save_as_over_hot_journal" => {
            python(
                "create(con)\n\
                 con.execute('PRAGMA cache_size=1')\n\
                 con.execute('BEGIN')\n\
                 con.execute('UPDATE doc SET v = 1, body = randomblob(300)')\n\
                 os._exit(0)",
                &path,
                page_size,
                rows_for(page_size, 8),
            );
            let journal = path.with_file_name("doc.db-journal");
            assert!(
                journal.metadata().is_ok_and(|m| m.len() > 0),
                "no hot journal"
            );
        }
        // Python died in WAL mode: commits still in the `-wal`, not checkpointed.
        "save_as_over_wal" => {
            python(
                "con.execute('PRAGMA journal_mode=WAL')\n\
                 con.execute('PRAGMA wal_autocheckpoint=0')\n\
                 create(con)\n\
                 con.execute('UPDATE doc SET v = 1, body = randomblob(250) WHERE id % 3 = 0')\n\
                 os._exit(0)",
                &path,
                page_size,
                rows_for(page_size, 6),
            );
            let wal = path.with_file_name("doc.db-wal");
            assert!(wal.metadata().is_ok_and(|m| m.len() > 0), "no WAL frames");
        }
        _ => {}
    }
}

/// Runs `body` in python3 with `con` open on `path` (autocommit, `page_size`-byte pages) and
/// `create(con)` at hand: the routes' table, `rows` rows of 300 random bytes, one commit.
fn python(body: &str, path: &Path, page_size: u32, rows: u32) {
    let prelude = r#"
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA page_size=%d" % int(sys.argv[2]))
def create(con):
    con.execute("CREATE TABLE doc (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, body BLOB NOT NULL)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO doc VALUES (?, 0, randomblob(300))", [(i,) for i in range(int(sys.argv[3]))])
    con.execute("COMMIT")
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", &format!("{prelude}{body}\n")])
        .arg(path)
        .arg(page_size.to_string())
        .arg(rows.to_string())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "python3 failed to prepare {}",
        path.display()
    );
}

/// An attempt to open `dir/name`, which does not exist: a mark in the trace, nothing more.
fn mark(dir: &Path, name: &str) {
    assert!(std::fs::File::open(dir.join(name)).is_err());
}

type Pool = r2d2::Pool<SingletonManager>;

/// A pool of `page_size`-byte pages holding about six pages of rows.
fn pool(page_size: u32) -> Pool {
    let pool = memory_pool().unwrap();
    let mut conn = pool.get().unwrap();
    schema(&mut conn, page_size);
    insert(&mut conn, 0, rows_for(page_size, 6));
    drop(conn);
    pool
}

fn schema(conn: &mut SqliteConnection, page_size: u32) {
    sql_query(format!("PRAGMA page_size={page_size}"))
        .execute(conn)
        .unwrap();
    sql_query("CREATE TABLE doc (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, body BLOB NOT NULL)")
        .execute(conn)
        .unwrap();
}

/// Rows of about 300 bytes filling `pages` pages.
fn rows_for(page_size: u32, pages: u32) -> u32 {
    page_size * pages / 300
}

/// Bodies whose bytes are half zeros and half not, in no pattern: a lost sector then differs
/// from the original while the journal checksum's sampled bytes (one in 200) often do not.
fn insert(conn: &mut SqliteConnection, first: u32, count: u32) {
    conn.transaction(|conn| {
        for id in first..first + count {
            let body = sql_query(format!(
                "INSERT INTO doc (id, v, body) VALUES ({id}, 0, \
                 CAST(replace(hex(randomblob(120)), 'A', '00') AS BLOB) || zeroblob({}))",
                id % 50
            ));
            body.execute(conn)?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
}

fn exec(conn: &mut SqliteConnection, sql: &str) {
    sql_query(sql).execute(conn).unwrap();
}

fn incremental() -> BackupOptions<'static> {
    BackupOptions::default().incremental(true)
}

/// Runs `route` in `dir`: the old version, the marks, and the call between them.
pub fn run(route: &str, dir: &Path, page_size: u32) {
    let file = target(route, dir, page_size);
    let begin = || mark(dir, "@@dsb-mark-begin");
    let end = || mark(dir, "@@dsb-mark-end");
    let update = |conn: &mut SqliteConnection| {
        exec(
            conn,
            "UPDATE doc SET v = v + 1, body = randomblob(200) WHERE id % 7 = 3",
        )
    };
    match route {
        "save_as" => {
            let pool = pool(page_size);
            let mut conn = pool.get().unwrap();
            conn.save_as(&file).unwrap();
            update(&mut conn);
            begin();
            conn.save_as(&file).unwrap();
            end();
        }
        "save_as_over_hot_journal" => {
            let pool = pool(page_size);
            begin();
            pool.get().unwrap().save_as(&file).unwrap();
            end();
        }
        "save_as_over_wal" => {
            let pool = pool(page_size);
            begin();
            pool.get().unwrap().save_as(&file).unwrap();
            end();
        }
        "full_in_place" => {
            pool(page_size).get().unwrap().save_as(&file).unwrap();
            // Another database, with no record of that file: the whole of it goes in place.
            let other = pool(page_size);
            let mut conn = other.get().unwrap();
            update(&mut conn);
            begin();
            conn.save_as_with(&file, incremental()).unwrap();
            end();
        }
        "full_in_place_shrink" => {
            let bigger = pool(page_size);
            insert(&mut bigger.get().unwrap(), 100_000, rows_for(page_size, 8));
            bigger.get().unwrap().save_as(&file).unwrap();
            let smaller = pool(page_size);
            begin();
            smaller
                .get()
                .unwrap()
                .save_as_with(&file, incremental())
                .unwrap();
            end();
        }
        "over_python_file" => {
            let pool = pool(page_size);
            begin();
            pool.get()
                .unwrap()
                .save_as_with(&file, incremental())
                .unwrap();
            end();
        }
        "incremental_update" | "incremental_growth" | "incremental_shrink" => {
            let pool = pool(page_size);
            let mut conn = pool.get().unwrap();
            conn.save_as_with(&file, incremental()).unwrap();
            match route {
                "incremental_update" => update(&mut conn),
                "incremental_growth" => insert(&mut conn, 100_000, rows_for(page_size, 3)),
                _ => {
                    exec(&mut conn, "DELETE FROM doc WHERE id % 3 <> 0");
                    exec(&mut conn, "VACUUM");
                }
            }
            begin();
            conn.save_as_with(&file, incremental()).unwrap();
            end();
        }
        "autosave" => {
            let pool = pool(page_size);
            let options = AutosaveOptions::default()
                .every(Duration::from_secs(3600))
                .on_error(|e| panic!("autosave failed: {e}"));
            let autosave = Autosave::start(&pool, &file, options).unwrap();
            update(&mut pool.get().unwrap());
            begin();
            autosave.save_now().unwrap();
            end();
            autosave.stop().unwrap();
        }
        "autosave_start" => {
            let bigger = pool(page_size);
            insert(&mut bigger.get().unwrap(), 100_000, rows_for(page_size, 8));
            bigger.get().unwrap().save_as(&file).unwrap();
            let pool = pool(page_size);
            let options = AutosaveOptions::default()
                .every(Duration::from_secs(3600))
                .on_error(|e| panic!("autosave failed: {e}"));
            begin();
            let autosave = Autosave::start(&pool, &file, options).unwrap();
            end();
            autosave.stop().unwrap();
        }
        "open_flush" => {
            let pool = pool(page_size);
            let options = AutosaveOptions::default()
                .every(Duration::from_secs(3600))
                .quiet(Duration::from_secs(3600))
                .on_error(|_| {});
            let autosave = Autosave::start(&pool, &file, options).unwrap();
            update(&mut pool.get().unwrap());
            let other = self::pool(page_size).get().unwrap().snapshot().unwrap();
            begin();
            pool.get().unwrap().restore_from_bytes(&other).unwrap();
            end();
            drop(autosave);
        }
        "snapshot" => {
            let pool = pool(page_size);
            let mut conn = pool.get().unwrap();
            conn.save_as(&file).unwrap();
            update(&mut conn);
            let snapshot = conn.snapshot().unwrap();
            begin();
            snapshot.save_as(&file).unwrap();
            end();
        }
        "template_cache" => {
            begin();
            cache(dir, page_size)
                .get_or_build(|conn| {
                    schema(conn, page_size);
                    insert(conn, 0, rows_for(page_size, 4));
                    Ok::<_, diesel::result::Error>(())
                })
                .unwrap();
            end();
        }
        other => panic!("unknown route {other}"),
    }
}
