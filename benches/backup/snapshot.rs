//! Snapshots: taking one against rusqlite's `serialize` and a plain memcpy, loading one
//! against `restore_from` of the same content from a file in the page cache, peak memory,
//! and templates made from bytes.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt, Template};

use crate::methods::filled_pool;
use crate::report::{print_table, ratio, Goal, Row};
use crate::rss::status_kib;

const TAKE: &str = "4a snapshot of the pool's shared database";
const SERIALIZE: &str = "4b rusqlite serialize of a private :memory: database";
const MEMCPY: &str = "4c memcpy of as many bytes";
const BYTES_FRESH: &str = "5a restore_from_bytes into a fresh pool";
const FILE_FRESH: &str = "5b restore_from (file in the page cache) into a fresh pool";
const BYTES_FULL: &str = "5c restore_from_bytes into a full pool";
const FILE_FULL: &str = "5d restore_from (file in the page cache) into a full pool";
const TEMPLATE_BYTES: &str = "6a Template::from_bytes, then connection()";
const TEMPLATE_CONN: &str = "6b Template::from_connection, then connection()";

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

pub fn run(mib: u64, rounds: usize, work: &Path) -> Vec<Goal> {
    let pool = filled_pool(mib);
    let file = work.join("snapshot-reference.db");
    pool.get().unwrap().save_as(&file).unwrap();
    let mut private = rusqlite::Connection::open_in_memory().unwrap();
    private
        .restore(
            rusqlite::MAIN_DB,
            &file,
            None::<fn(rusqlite::backup::Progress)>,
        )
        .unwrap();
    let bytes = pool.get().unwrap().snapshot().unwrap().into_vec();
    let size = bytes.len() as u64;
    let full = filled_pool(mib);

    let names = [
        TAKE,
        SERIALIZE,
        MEMCPY,
        BYTES_FRESH,
        FILE_FRESH,
        BYTES_FULL,
        FILE_FULL,
    ];
    let mut rows: Vec<Row> = names.iter().map(|n| Row::new(n, size)).collect();
    for round in 0..rounds {
        let mut times = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let t = match *name {
                TAKE => {
                    let mut c = pool.get().unwrap();
                    timed(|| black_box(c.snapshot().unwrap())).0
                }
                SERIALIZE => timed(|| black_box(private.serialize(rusqlite::MAIN_DB).unwrap())).0,
                MEMCPY => timed(|| black_box(bytes.to_vec())).0,
                BYTES_FRESH | FILE_FRESH => {
                    let fresh = memory_pool().unwrap();
                    let mut c = fresh.get().unwrap();
                    c.batch_execute("SELECT 1").unwrap();
                    match *name {
                        BYTES_FRESH => timed(|| c.restore_from_bytes(&bytes).unwrap()).0,
                        _ => timed(|| c.restore_from(&file).unwrap()).0,
                    }
                }
                _ => {
                    let mut c = full.get().unwrap();
                    match *name {
                        BYTES_FULL => timed(|| c.restore_from_bytes(&bytes).unwrap()).0,
                        _ => timed(|| c.restore_from(&file).unwrap()).0,
                    }
                }
            };
            rows[i].samples.push(t);
            times.push(crate::report::fmt(t));
        }
        println!("snapshot round {}/{rounds}: {}", round + 1, times.join(" "));
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
    let take: Vec<&Row> = rows.iter().filter(|r| r.name.starts_with('4')).collect();
    print_table("Snapshot: memory to bytes", &take, find(TAKE));
    let load: Vec<&Row> = rows.iter().filter(|r| r.name.starts_with('5')).collect();
    print_table("Open from bytes", &load, find(FILE_FRESH));

    let growth_kib = snapshot_peak_growth_in_child(mib);
    println!(
        "\npeak RSS growth during snapshot of {:.0} MiB: {:.1} MiB",
        size as f64 / 1048576.0,
        growth_kib as f64 / 1024.0
    );
    let (template_bytes, template_conn) = templates(rounds);

    vec![
        Goal::new(
            "snapshot / rusqlite serialize",
            ratio(find(TAKE), find(SERIALIZE)),
            1.0,
        ),
        Goal::new("snapshot / memcpy", ratio(find(TAKE), find(MEMCPY)), 1.5),
        Goal::new(
            "peak RSS growth during snapshot / (database size + 32 MiB)",
            growth_kib as f64 * 1024.0 / (size as f64 + 32.0 * 1048576.0),
            1.0,
        ),
        Goal::new(
            "restore_from_bytes / restore_from, fresh pool",
            ratio(find(BYTES_FRESH), find(FILE_FRESH)),
            1.0,
        ),
        Goal::new(
            "restore_from_bytes / restore_from, full pool",
            ratio(find(BYTES_FULL), find(FILE_FULL)),
            1.0,
        ),
        Goal::new(
            "Template::from_bytes + connection / Template::connection",
            ratio(&template_bytes, &template_conn),
            1.1,
        ),
    ]
}

/// The argument that makes this benchmark measure one snapshot's memory and exit.
pub const RSS_CHILD_ARG: &str = "--snapshot-rss-child";

/// How many KiB the peak RSS rose above the RSS before one snapshot of a `mib` MiB pool,
/// measured in a fresh process: in this one, memory freed by earlier rows would be reused
/// and hide the growth.
fn snapshot_peak_growth_in_child(mib: u64) -> u64 {
    crate::rss::in_child(&[RSS_CHILD_ARG, &mib.to_string()])
}

/// The child's side: prints the growth in KiB.
pub fn snapshot_peak_growth_child(mib: u64) {
    let pool = filled_pool(mib);
    let mut conn = pool.get().unwrap();
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = status_kib("VmRSS:");
    let snapshot = conn.snapshot().unwrap();
    let peak = status_kib("VmHWM:");
    drop(snapshot);
    println!("{}", peak.saturating_sub(before));
}

/// A fresh copy per test from a template built from bytes, against one built from the same
/// database's connection, on a 5 MiB database.
fn templates(rounds: usize) -> (Row, Row) {
    let source = filled_pool(5);
    let mut conn = source.get().unwrap();
    let from_bytes = Template::from_bytes(&conn.snapshot().unwrap()).unwrap();
    let from_conn = Template::from_connection(&mut conn).unwrap();
    let (mut a, mut b) = (Row::new(TEMPLATE_BYTES, 0), Row::new(TEMPLATE_CONN, 0));
    for _ in 0..rounds * 20 {
        a.samples
            .push(timed(|| black_box(from_bytes.connection().unwrap())).0);
        b.samples
            .push(timed(|| black_box(from_conn.connection().unwrap())).0);
    }
    print_table("Template from bytes", &[&a, &b], &b);
    (a, b)
}
