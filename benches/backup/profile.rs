//! One route, once, in a process of its own: for `valgrind --tool=callgrind`, whose
//! instruction counts compare two commits far more precisely than times on a shared machine.
//!
//! `--profile ROUTE MIB DIR`: builds what the route needs (a pool of MIB MiB, its file in
//! DIR, a full or fresh target) outside the measured call, then runs the route once inside
//! [`measured`]. Collect only that call with
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*'`.
//! `--profile list 0 .` prints the routes; `benches/compare.sh --callgrind` runs every route
//! this way on two commits.

use std::hint::black_box;
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions, Template};

use crate::methods::filled_pool;

pub const ARG: &str = "--profile";

/// The routes, in the order `compare.sh` runs them.
pub const ROUTES: [&str; 9] = [
    "save-rename",
    "save-in-place",
    "save-incremental",
    "open-fresh",
    "open-full",
    "snapshot",
    "bytes-fresh",
    "bytes-full",
    "template-clone",
];

/// Never inlined, so callgrind can collect it alone.
#[inline(never)]
fn measured<T>(f: impl FnOnce() -> T) -> T {
    black_box(f())
}

pub fn run(route: &str, mib: u64, dir: &Path) {
    if route == "list" {
        println!("{}", ROUTES.join(" "));
        return;
    }
    let file = dir.join(format!("profile-{mib}.db"));
    let pool = filled_pool(mib);
    let mut c = pool.get().unwrap();
    c.batch_execute("SELECT 1").unwrap();
    match route {
        "save-rename" => {
            let out = dir.join("profile-out.db");
            let _ = std::fs::remove_file(&out);
            measured(|| c.save_as(&out).unwrap());
            std::fs::remove_file(&out).unwrap();
        }
        // A full save into the file the last save wrote (no pages tracked since a
        // restore: the crate rewrites the file in place or renames, whichever it picks).
        "save-in-place" | "save-incremental" => {
            let out = dir.join("profile-inplace.db");
            let opts = || BackupOptions::default().incremental(true);
            c.save_as_with(&out, opts()).unwrap();
            if route == "save-incremental" {
                // About 1% of the notes, as in the timed benchmark.
                let notes = mib * 1024 * 1024 / 2080;
                c.batch_execute(&format!(
                    "UPDATE notes SET body = hex(randomblob(1000)) WHERE id <= {}",
                    (notes / 100).max(1)
                ))
                .unwrap();
            } else {
                c.batch_execute("UPDATE notes SET title = title || '!'")
                    .unwrap();
            }
            measured(|| c.save_as_with(&out, opts()).unwrap());
            std::fs::remove_file(&out).unwrap();
        }
        "open-fresh" | "open-full" => {
            c.save_as(&file).unwrap();
            // Full: holding the file's own content already, as in `open.rs`.
            let target = memory_pool().unwrap();
            let mut t = target.get().unwrap();
            if route == "open-full" {
                t.restore_from(&file).unwrap();
            }
            t.batch_execute("SELECT 1").unwrap();
            measured(|| t.restore_from(&file).unwrap());
        }
        "snapshot" => drop(measured(|| c.snapshot().unwrap())),
        "bytes-fresh" | "bytes-full" => {
            let bytes = c.snapshot().unwrap().into_vec();
            let target = memory_pool().unwrap();
            let mut t = target.get().unwrap();
            if route == "bytes-full" {
                t.restore_from_bytes(&bytes).unwrap();
            }
            t.batch_execute("SELECT 1").unwrap();
            measured(|| t.restore_from_bytes(&bytes).unwrap());
        }
        "template-clone" => {
            let template = Template::new(|c: &mut diesel::SqliteConnection| {
                c.batch_execute(
                    "CREATE TABLE notebooks(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
                     CREATE TABLE notes(id INTEGER PRIMARY KEY, notebook_id INTEGER NOT NULL,
                         title TEXT NOT NULL, body TEXT NOT NULL);",
                )
            })
            .unwrap();
            drop(measured(|| template.connection().unwrap()));
        }
        other => panic!("--profile {other}: no such route (one of {ROUTES:?})"),
    }
}
