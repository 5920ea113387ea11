//! The contenders, each producing the same durable result from the same content.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use diesel::sql_types::Integer;
use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions, SingletonManager};

use crate::report::Row;

pub const SAVE: &str = "1a save_as (defaults)";
pub const SAVE_ALL: &str = "1b save_as, one step";
pub const SAVE_100: &str = "1c save_as, 100 pages/step";
pub const SAVE_100_PAUSE: &str = "1d save_as, 100 pages/step + 1 ms pause";
pub const RUSQLITE_BACKUP: &str = "1e rusqlite Connection::backup";
pub const RUSQLITE_STEP_ALL: &str = "1f rusqlite Backup::step(-1)";
pub const VACUUM_INTO: &str = "1g VACUUM INTO";
pub const PYTHON: &str = "1h Python sqlite3 backup";
pub const FILE_COPY: &str = "1i file copy + fsync (physical reference)";
pub const POOL: &str = "3a SingletonManager pool.get() + SELECT 1";
pub const DIESEL_POOL: &str = "3b diesel ConnectionManager (file db) pool.get() + SELECT 1";

const CHECKOUTS: u32 = 20_000;

pub struct Bench {
    pool: r2d2::Pool<SingletonManager>,
    rusqlite_memory: rusqlite::Connection,
    reference: PathBuf,
    dir: PathBuf,
    python: Option<PathBuf>,
    pub pages: u64,
    pub page_size: u64,
    pub bytes: u64,
}

/// Fills a fresh pool with about `mib` MiB of notes.
pub fn filled_pool(mib: u64) -> r2d2::Pool<SingletonManager> {
    let pool = memory_pool().expect("pool");
    let mut c = pool.get().expect("conn");
    c.batch_execute(&format!(
        "CREATE TABLE notebooks(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
         CREATE TABLE notes(id INTEGER PRIMARY KEY, notebook_id INTEGER NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL);
         CREATE INDEX notes_by_notebook ON notes(notebook_id);
         INSERT INTO notebooks(title) VALUES ('bench');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO notes(notebook_id, title, body) SELECT 1, 'note ' || i, hex(randomblob(1000)) FROM n;",
        rows = mib * 1024 * 1024 / 2080
    ))
    .expect("fill");
    drop(c);
    pool
}

pub fn scalar(conn: &mut SqliteConnection, sql: &str) -> u64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).expect(sql).n as u64
}

/// fsync of a file and of its directory: what makes a new file durable.
pub fn make_durable(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
    File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

impl Bench {
    pub fn new(mib: u64, dir: &Path) -> Bench {
        let pool = filled_pool(mib);
        let mut c = pool.get().unwrap();
        let pages = scalar(&mut c, "SELECT page_count AS n FROM pragma_page_count");
        let page_size = scalar(&mut c, "SELECT page_size AS n FROM pragma_page_size");
        let reference = dir.join("reference.db");
        c.save_as(&reference).unwrap();
        drop(c);
        let mut rusqlite_memory = rusqlite::Connection::open_in_memory().unwrap();
        rusqlite_memory
            .restore(
                rusqlite::MAIN_DB,
                &reference,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .unwrap();
        let python = write_python_script(dir);
        Bench {
            pool,
            rusqlite_memory,
            reference,
            dir: dir.to_path_buf(),
            python,
            pages,
            page_size,
            bytes: pages * page_size,
        }
    }

    /// Runs every method once per round, interleaved, and returns one row per method.
    pub fn run_all(&mut self, rounds: usize) -> Vec<Row> {
        let mut rows: Vec<Row> = [
            SAVE,
            SAVE_ALL,
            SAVE_100,
            SAVE_100_PAUSE,
            RUSQLITE_BACKUP,
            RUSQLITE_STEP_ALL,
            VACUUM_INTO,
            FILE_COPY,
        ]
        .iter()
        .map(|n| Row::new(n, self.bytes))
        .collect();
        if self.python.is_some() {
            rows.push(Row::new(PYTHON, self.bytes));
        }
        for name in [POOL, DIESEL_POOL] {
            let mut row = Row::new(name, 0);
            row.ops = CHECKOUTS;
            rows.push(row);
        }
        let diesel_pool = self.diesel_file_pool();
        for round in 0..rounds {
            eprint!("round {}/{rounds}:", round + 1);
            for row in rows.iter_mut() {
                let t = self.run_one(&row.name, &diesel_pool);
                eprint!(" {}", crate::report::fmt(t));
                row.samples.push(t);
            }
            eprintln!();
        }
        rows
    }

    fn out(&self) -> PathBuf {
        let p = self.dir.join("out.db");
        let _ = fs::remove_file(&p);
        p
    }

    fn run_one(
        &mut self,
        name: &str,
        diesel_pool: &r2d2::Pool<ConnectionManager<SqliteConnection>>,
    ) -> Duration {
        let out = self.out();
        let save = |opts: BackupOptions| {
            let mut c = self.pool.get().unwrap();
            timed(|| c.save_as_with(&out, opts).unwrap())
        };
        let t = match name {
            SAVE => save(BackupOptions::default()),
            SAVE_ALL => save(BackupOptions::default().pages_per_step(0)),
            SAVE_100 => save(BackupOptions::default().pages_per_step(100)),
            SAVE_100_PAUSE => save(
                BackupOptions::default()
                    .pages_per_step(100)
                    .pause(Duration::from_millis(1)),
            ),
            RUSQLITE_BACKUP => timed(|| {
                self.rusqlite_memory
                    .backup(rusqlite::MAIN_DB, &out, None)
                    .unwrap();
                make_durable(&out);
            }),
            RUSQLITE_STEP_ALL => timed(|| {
                let mut dst = rusqlite::Connection::open(&out).unwrap();
                {
                    let b = rusqlite::backup::Backup::new(&self.rusqlite_memory, &mut dst).unwrap();
                    b.step(-1).unwrap();
                }
                drop(dst);
                make_durable(&out);
            }),
            VACUUM_INTO => {
                let mut c = self.pool.get().unwrap();
                timed(|| {
                    // The pool's connections use the memdb VFS; name the disk VFS explicitly.
                    c.batch_execute(&format!("VACUUM INTO 'file:{}?vfs=unix'", out.display()))
                        .unwrap();
                    make_durable(&out);
                })
            }
            PYTHON => self.python_backup(&out),
            FILE_COPY => timed(|| {
                fs::copy(&self.reference, &out).unwrap();
                make_durable(&out);
            }),
            POOL => checkouts(&self.pool),
            DIESEL_POOL => checkouts(diesel_pool),
            other => unreachable!("{other}"),
        };
        let _ = fs::remove_file(&out);
        t
    }

    fn diesel_file_pool(&self) -> r2d2::Pool<ConnectionManager<SqliteConnection>> {
        let url = self.dir.join("diesel-pool.db");
        r2d2::Pool::builder()
            .max_size(1)
            .build(ConnectionManager::new(url.to_str().unwrap()))
            .unwrap()
    }

    fn python_backup(&self, out: &Path) -> Duration {
        let script = self.python.as_ref().unwrap();
        let output = Command::new("python3")
            .arg(script)
            .arg(&self.reference)
            .arg(out)
            .output()
            .expect("python3");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let secs: f64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        Duration::from_secs_f64(secs)
    }
}

fn checkouts<M>(pool: &r2d2::Pool<M>) -> Duration
where
    M: r2d2::ManageConnection<Connection = SqliteConnection>,
{
    timed(|| {
        for _ in 0..CHECKOUTS {
            let mut c = pool.get().unwrap();
            let one: i32 = diesel::select(1.into_sql::<Integer>())
                .get_result(&mut *c)
                .unwrap();
            assert_eq!(one, 1);
        }
    })
}

/// Python's sqlite3 backup from `:memory:` to a file, timing itself in-process (the load
/// of the content into memory is not timed; the backup, close and fsyncs are).
const PYTHON_SCRIPT: &str = r#"
import os, sqlite3, sys, time
src_file, out = sys.argv[1], sys.argv[2]
mem = sqlite3.connect(":memory:")
disk = sqlite3.connect(src_file)
disk.backup(mem)
disk.close()
start = time.perf_counter()
dst = sqlite3.connect(out)
mem.backup(dst)
dst.close()
fd = os.open(out, os.O_RDONLY); os.fsync(fd); os.close(fd)
fd = os.open(os.path.dirname(os.path.abspath(out)), os.O_RDONLY); os.fsync(fd); os.close(fd)
print(time.perf_counter() - start)
"#;

fn write_python_script(dir: &Path) -> Option<PathBuf> {
    let ok = Command::new("python3")
        .args(["-c", "import sqlite3"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("python3 with sqlite3 not found: skipping the Python row");
        return None;
    }
    let path = dir.join("python_backup.py");
    fs::write(&path, PYTHON_SCRIPT).unwrap();
    Some(path)
}
