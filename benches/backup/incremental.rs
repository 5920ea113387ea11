//! Incremental saves: bytes written (journal included) and time for a 1% change against a
//! full `save_as` of the same database in the same run; a save with nothing changed; and the
//! cost of write tracking on a loop of small write transactions.
//!
//! Run alone with `cargo bench --bench backup -- --only incremental --mib 200`.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{BackupExt, BackupOptions};

use crate::methods::filled_pool;
use crate::report::{fmt, print_table, Goal, Row};

const FULL: &str = "7a save_as (full), same database";
const INCREMENTAL: &str = "7b save_as_with incremental, 1% of pages changed";
const UNCHANGED: &str = "7c save_as_with incremental, nothing changed";
const PLAIN: &str = "8a small write transactions, plain memdb";
const TRACKED: &str = "8b small write transactions, tracked (the pool's VFS)";
const SMALL_TXNS: u32 = 1000;

/// Bytes this process has written so far (`/proc/self/io`, every write call).
fn wchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn timed(f: impl FnOnce()) -> (Duration, u64) {
    let before = wchar();
    let start = Instant::now();
    f();
    (start.elapsed(), wchar() - before)
}

pub fn run(mib: u64, rounds: usize, work: &Path) -> Vec<Goal> {
    let pool = filled_pool(mib);
    let file = work.join("incremental.db");
    let mut c = pool.get().unwrap();
    c.save_as(&file).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    let pages = size / 4096;
    // Notes take ~2 KiB of the file each. Rewriting the bodies of 1% of them in one
    // contiguous run changes about 1% of the pages (the share is measured and printed).
    let notes = size / 2080;
    let run_len = (notes / 100).max(1);
    let incremental = || BackupOptions::default().incremental(true);
    let mut rows: Vec<Row> = [FULL, INCREMENTAL, UNCHANGED]
        .iter()
        .map(|n| Row::new(n, size))
        .collect();
    let (mut written, mut unchanged_written, mut changed_pages) = (0u64, 0u64, 0u64);
    for round in 0..rounds as u64 {
        rows[0].samples.push(timed(|| c.save_as(&file).unwrap()).0);
        let before = c.snapshot().unwrap().into_vec();
        let start = 1 + (round * 7919 * run_len) % notes.saturating_sub(run_len).max(1);
        c.batch_execute(&format!(
            "UPDATE notes SET body = hex(randomblob(1000)) WHERE id BETWEEN {start} AND {}",
            start + run_len - 1
        ))
        .unwrap();
        let after = c.snapshot().unwrap().into_vec();
        changed_pages += before
            .chunks(4096)
            .zip(after.chunks(4096))
            .filter(|(a, b)| a != b)
            .count() as u64;
        drop((before, after));
        let (t, w) = timed(|| c.save_as_with(&file, incremental()).unwrap());
        rows[1].samples.push(t);
        written += w;
        let (t, w) = timed(|| c.save_as_with(&file, incremental()).unwrap());
        rows[2].samples.push(t);
        unchanged_written += w;
    }
    drop(c);
    let rounds = rounds.max(1) as u64;
    let refs: Vec<&Row> = rows.iter().collect();
    print_table("Incremental save (1% of pages changed)", &refs, &rows[0]);
    let bytes_pct = written as f64 * 100.0 / rounds as f64 / size as f64;
    println!(
        "\nchanged pages: {:.2}% of {pages}; written per incremental save: {} bytes ({bytes_pct:.2}% of the file, journal included); with nothing changed: {} bytes",
        changed_pages as f64 * 100.0 / rounds as f64 / pages as f64,
        written / rounds,
        unchanged_written / rounds
    );

    let (plain, tracked) = tracking_overhead((rounds as usize * 4).max(12));
    let overhead = (tracked.per_op().as_secs_f64() / plain.per_op().as_secs_f64() - 1.0) * 100.0;
    print_table("Write tracking", &[&plain, &tracked], &plain);
    println!(
        "\ntracking overhead: {overhead:.2}%; {} per transaction tracked",
        fmt(tracked.per_op())
    );

    vec![
        goal(
            "incremental 1%: bytes written / file size",
            bytes_pct,
            3.0,
            "%",
        ),
        goal(
            "incremental 1% / full save_as (time)",
            crate::report::ratio(&rows[1], &rows[0]),
            0.10,
            "x",
        ),
        goal(
            "incremental, nothing changed: time",
            rows[2].median().as_secs_f64() * 1e3,
            1.0,
            " ms",
        ),
        goal(
            "incremental, nothing changed: bytes written",
            (unchanged_written / rounds) as f64,
            0.0,
            " B",
        ),
        goal(
            "write-tracking overhead, small transactions",
            overhead,
            3.0,
            "%",
        ),
    ]
}

fn goal(what: &str, value: f64, limit: f64, unit: &'static str) -> Goal {
    Goal {
        what: what.to_owned(),
        value,
        limit,
        unit,
    }
}

/// The same loop of small write transactions on two shared memdb databases, one opened
/// through plain memdb and one through the crate's tracking VFS, interleaved round by round.
fn tracking_overhead(rounds: usize) -> (Row, Row) {
    let open = |vfs: &str| {
        let uri = format!("file:/dsb-bench-overhead-{vfs}?vfs={vfs}");
        let mut c = SqliteConnection::establish(&uri).unwrap();
        c.batch_execute(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO t SELECT i, randomblob(200) FROM n;",
        )
        .unwrap();
        c
    };
    let mut plain_conn = open("memdb");
    let mut tracked_conn = open("diesel-sqlite-backup-memdb");
    let mut plain = Row::new(PLAIN, 0);
    let mut tracked = Row::new(TRACKED, 0);
    plain.ops = SMALL_TXNS;
    tracked.ops = SMALL_TXNS;
    let loop_on = |c: &mut SqliteConnection, round: usize| {
        let start = Instant::now();
        for i in 0..SMALL_TXNS as usize {
            let id = 1 + (round * 7919 + i * 97) % 20000;
            c.batch_execute(&format!(
                "UPDATE t SET v = randomblob(200) WHERE id = {id}; INSERT INTO t(v) VALUES (randomblob(50));"
            ))
            .unwrap();
        }
        start.elapsed()
    };
    for round in 0..rounds.max(3) {
        plain.samples.push(loop_on(&mut plain_conn, round));
        tracked.samples.push(loop_on(&mut tracked_conn, round));
    }
    (plain, tracked)
}
