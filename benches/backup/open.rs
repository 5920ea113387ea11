//! Open: `restore_from` against rusqlite's restore into the same kinds of target, full and
//! fresh, and against reading the file into a `Vec`. Every timed call starts from a synced
//! page cache. Also the peak memory of a restore into a full pool, and a child mode that
//! runs one route alone for `valgrind --tool=callgrind`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt, SingletonManager};

use crate::methods::filled_pool;
use crate::report::{print_table, ratio, Goal, Row};
use crate::rss::status_kib;

const FULL: &str = "2a restore_from into a full pool";
const RUSQLITE_FULL_PRIVATE: &str = "2b rusqlite restore into a full private :memory:";
const RUSQLITE_FULL_MEMDB: &str = "2c rusqlite restore into a full shared memdb";
const FRESH: &str = "2d restore_from into a fresh pool";
const RUSQLITE_FRESH_PRIVATE: &str = "2e rusqlite restore into a fresh private :memory:";
const RUSQLITE_FRESH_MEMDB: &str = "2f rusqlite restore into a fresh shared memdb";
const VEC_READ: &str = "2g read the file into a Vec (floor)";

const ROUTES: [&str; 7] = [
    FULL,
    RUSQLITE_FULL_PRIVATE,
    RUSQLITE_FULL_MEMDB,
    FRESH,
    RUSQLITE_FRESH_PRIVATE,
    RUSQLITE_FRESH_MEMDB,
    VEC_READ,
];

/// Where a route restores into. Full targets are built once and keep their size across rounds.
enum Target {
    Pool(r2d2::Pool<SingletonManager>),
    /// The pool, if any, only keeps a shared database alive.
    Rusqlite(
        rusqlite::Connection,
        #[allow(dead_code)] Option<r2d2::Pool<SingletonManager>>,
    ),
    Nothing,
}

/// A rusqlite connection to a fresh SingletonManager's shared database (the pool's kind of
/// target); the pool keeps the database alive.
fn shared_memdb() -> Target {
    let manager = SingletonManager::new();
    let uri = manager.uri().to_owned();
    let pool = r2d2::Pool::builder().max_size(1).build(manager).unwrap();
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(&uri, flags).unwrap();
    Target::Rusqlite(conn, Some(pool))
}

fn rusqlite_restore(conn: &mut rusqlite::Connection, file: &Path) {
    conn.restore(
        rusqlite::MAIN_DB,
        file,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .unwrap();
}

/// The target `route` restores into; full ones already hold as much data as `file`.
fn target(route: &str, file: &Path, mib: u64) -> Target {
    let mut t = match route {
        FULL => Target::Pool(filled_pool(mib)),
        FRESH => Target::Pool(memory_pool().unwrap()),
        RUSQLITE_FULL_PRIVATE | RUSQLITE_FRESH_PRIVATE => {
            Target::Rusqlite(rusqlite::Connection::open_in_memory().unwrap(), None)
        }
        RUSQLITE_FULL_MEMDB | RUSQLITE_FRESH_MEMDB => shared_memdb(),
        _ => Target::Nothing,
    };
    if let (RUSQLITE_FULL_PRIVATE | RUSQLITE_FULL_MEMDB, Target::Rusqlite(c, _)) = (route, &mut t) {
        rusqlite_restore(c, file);
    }
    t
}

/// One restore of `file` into `target`; never inlined, so callgrind can collect it alone.
#[inline(never)]
fn profiled_restore(target: &mut Target, file: &Path) {
    match target {
        Target::Pool(pool) => pool.get().unwrap().restore_from(file).unwrap(),
        Target::Rusqlite(conn, _) => rusqlite_restore(conn, file),
        Target::Nothing => {
            black_box(std::fs::read(file).unwrap());
        }
    }
}

fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Times one call of `route`, after a sync; the target is built (and, if fresh, its first
/// connection opened) outside the timing.
fn time_route(route: &str, full: &mut [Option<Target>], file: &Path, mib: u64) -> Duration {
    let i = ROUTES.iter().position(|r| *r == route).unwrap();
    let mut fresh = None;
    let target = match route {
        FULL | RUSQLITE_FULL_PRIVATE | RUSQLITE_FULL_MEMDB => {
            full[i].get_or_insert_with(|| target(route, file, mib))
        }
        _ => fresh.insert(target(route, file, mib)),
    };
    if let Target::Pool(pool) = target {
        pool.get().unwrap().batch_execute("SELECT 1").unwrap();
    }
    sync();
    let start = Instant::now();
    profiled_restore(target, file);
    start.elapsed()
}

pub fn run(mib: u64, rounds: usize, work: &Path) -> Vec<Goal> {
    let file = work.join("open-reference.db");
    filled_pool(mib).get().unwrap().save_as(&file).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    let mut full: Vec<Option<Target>> = ROUTES.iter().map(|_| None).collect();
    let mut rows: Vec<Row> = ROUTES.iter().map(|n| Row::new(n, size)).collect();
    for round in 0..rounds {
        let mut times = Vec::new();
        for (i, route) in ROUTES.iter().enumerate() {
            let t = time_route(route, &mut full, &file, mib);
            rows[i].samples.push(t);
            times.push(crate::report::fmt(t));
        }
        eprintln!("open round {}/{rounds}: {}", round + 1, times.join(" "));
    }
    drop(full);
    let find = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
    let all: Vec<&Row> = rows.iter().collect();
    print_table("Open: file to memory", &all, find(RUSQLITE_FULL_PRIVATE));

    let growth = crate::rss::in_child(&[RSS_CHILD_ARG, &mib.to_string(), file.to_str().unwrap()]);
    println!(
        "\npeak RSS growth during restore_from of {:.0} MiB into a full pool: {:.1} MiB",
        size as f64 / 1048576.0,
        growth as f64 / 1024.0
    );
    vec![
        Goal::new(
            "restore_from, full pool / rusqlite into full :memory:",
            ratio(find(FULL), find(RUSQLITE_FULL_PRIVATE)),
            1.0,
        ),
        Goal::new(
            "restore_from, fresh pool / rusqlite into fresh :memory:",
            ratio(find(FRESH), find(RUSQLITE_FRESH_PRIVATE)),
            1.0,
        ),
        Goal::new(
            "restore_from, fresh pool / read into a Vec",
            ratio(find(FRESH), find(VEC_READ)),
            1.4,
        ),
        Goal::new(
            "peak RSS growth, restore into a full pool / (database size + 32 MiB)",
            growth as f64 * 1024.0 / (size as f64 + 32.0 * 1048576.0),
            1.0,
        ),
    ]
}

/// The argument that makes this benchmark measure one restore's memory and exit.
pub const RSS_CHILD_ARG: &str = "--open-rss-child";

/// The child's side: KiB the peak RSS rose during one `restore_from` of `file` into a pool
/// holding `mib` MiB, in a fresh process so that memory freed earlier cannot hide it.
pub fn restore_peak_growth_child(mib: u64, file: &Path) {
    let pool = filled_pool(mib);
    let mut conn = pool.get().unwrap();
    conn.batch_execute("SELECT 1").unwrap();
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = status_kib("VmRSS:");
    conn.restore_from(file).unwrap();
    let peak = status_kib("VmHWM:");
    println!("{}", peak.saturating_sub(before));
}

/// The argument for one route alone, for profiling:
/// `--open-profile ROUTE MIB FILE [REPEAT]`, ROUTE one of `full`, `full-private`,
/// `full-memdb`, `fresh`, `fresh-private`, `fresh-memdb`, `vec`. Writes FILE (MiB big) if
/// it does not exist. Collect only the restore with
/// `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*profiled_restore*'`.
pub const PROFILE_ARG: &str = "--open-profile";

pub fn profile_child(route: &str, mib: u64, file: &Path, repeat: usize) {
    if !file.exists() {
        filled_pool(mib).get().unwrap().save_as(file).unwrap();
    }
    let routes = [
        "full",
        "full-private",
        "full-memdb",
        "fresh",
        "fresh-private",
        "fresh-memdb",
        "vec",
    ];
    let i = routes.iter().position(|r| *r == route).expect("route");
    let name = ROUTES[i];
    let mut full: Vec<Option<Target>> = ROUTES.iter().map(|_| None).collect();
    for _ in 0..repeat {
        let before = usage();
        let t = time_route(name, &mut full, file, mib);
        let after = usage();
        eprintln!(
            "{route}: wall {} user {:.1} ms sys {:.1} ms minor faults {}",
            crate::report::fmt(t),
            (after.0 - before.0) * 1e3,
            (after.1 - before.1) * 1e3,
            after.2 - before.2
        );
    }
}

/// CPU seconds in user and system mode, and minor page faults, of this process so far.
fn usage() -> (f64, f64, i64) {
    // SAFETY: getrusage fills the zeroed struct it is given and reads nothing else.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime), secs(u.ru_stime), u.ru_minflt)
}
