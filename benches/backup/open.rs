//! Open: `restore_from` against rusqlite's restore into the same kinds of target, full and
//! fresh, and against reading the file into a `Vec`. Every timed call starts with the file
//! read through once (in the page cache) and dirty pages synced. Full targets are loaded from
//! that same file before the first round, so both sides replace the same content with the
//! same page size; the full pool and rusqlite's full `:memory:` run back to back in
//! alternating order, and their goal is the median of the round-by-round ratios. Also the
//! peak memory of a restore into a full pool, and a child mode that runs one route alone for
//! `valgrind --tool=callgrind`.

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt, SingletonManager};

use crate::methods::{filled_pool, scalar};
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

/// The target `route` restores into; full ones already hold the content of `file` itself
/// (what a user compares: the same data replaced, with the same page size, on both sides).
fn target(route: &str, file: &Path) -> Target {
    let mut t = match route {
        FULL => {
            let pool = memory_pool().unwrap();
            pool.get().unwrap().restore_from(file).unwrap();
            Target::Pool(pool)
        }
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

/// Reads `file` through, so that the timed call reads it from the page cache, then syncs.
/// No SQLite connection has the file open between timed calls, so closing this descriptor
/// cannot drop a lock.
fn warm(file: &Path) {
    let mut buf = vec![0u8; 1 << 20];
    let mut f = File::open(file).unwrap();
    while f.read(&mut buf).unwrap() > 0 {}
    drop(f);
    sync();
}

/// One timed call: wall time, and this process's CPU seconds in user and system mode.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    user: f64,
    sys: f64,
}

/// Times one call of `route` from the page cache; the target is built (and, if fresh, its
/// first connection opened) outside the timing.
fn time_route(route: &str, full: &mut [Option<Target>], file: &Path) -> Sample {
    let i = ROUTES.iter().position(|r| *r == route).unwrap();
    let mut fresh = None;
    let target = match route {
        FULL | RUSQLITE_FULL_PRIVATE | RUSQLITE_FULL_MEMDB => {
            full[i].get_or_insert_with(|| target(route, file))
        }
        _ => fresh.insert(target(route, file)),
    };
    if let Target::Pool(pool) = target {
        pool.get().unwrap().batch_execute("SELECT 1").unwrap();
    }
    warm(file);
    let before = usage();
    let start = Instant::now();
    profiled_restore(target, file);
    let wall = start.elapsed();
    let after = usage();
    Sample {
        wall,
        user: after.0 - before.0,
        sys: after.1 - before.1,
    }
}

/// Page size and page count of a full target, as SQLite reports them.
fn shape(target: &mut Target) -> (u64, u64) {
    match target {
        Target::Pool(pool) => {
            let mut c = pool.get().unwrap();
            (
                scalar(&mut c, "SELECT page_size AS n FROM pragma_page_size"),
                scalar(&mut c, "SELECT page_count AS n FROM pragma_page_count"),
            )
        }
        Target::Rusqlite(c, _) => {
            let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
            (q("PRAGMA page_size"), q("PRAGMA page_count"))
        }
        Target::Nothing => unreachable!(),
    }
}

pub fn run(mib: u64, rounds: usize, work: &Path) -> Vec<Goal> {
    let file = work.join("open-reference.db");
    filled_pool(mib).get().unwrap().save_as(&file).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    let mut full: Vec<Option<Target>> = ROUTES.iter().map(|_| None).collect();
    for (i, route) in ROUTES.iter().enumerate() {
        if matches!(*route, FULL | RUSQLITE_FULL_PRIVATE | RUSQLITE_FULL_MEMDB) {
            full[i] = Some(target(route, &file));
        }
    }
    let shapes: Vec<(u64, u64)> = full.iter_mut().flatten().map(shape).collect();
    assert!(
        shapes.windows(2).all(|w| w[0] == w[1]),
        "full targets differ in page size or count: {shapes:?}"
    );
    let mut rows: Vec<Row> = ROUTES.iter().map(|n| Row::new(n, size)).collect();
    // Per round: the full pool's sample and rusqlite's full `:memory:` one.
    let mut pairs: Vec<(Sample, Sample)> = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..ROUTES.len()).collect();
        if round % 2 == 1 {
            order.swap(0, 1); // the pair alternates which goes first
        }
        let mut samples = vec![None; ROUTES.len()];
        for i in order {
            let s = time_route(ROUTES[i], &mut full, &file);
            rows[i].samples.push(s.wall);
            samples[i] = Some(s);
        }
        pairs.push((samples[0].unwrap(), samples[1].unwrap()));
        let times: Vec<String> = samples
            .iter()
            .map(|s| crate::report::fmt(s.unwrap().wall))
            .collect();
        eprintln!("open round {}/{rounds}: {}", round + 1, times.join(" "));
    }
    drop(full);
    let find = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
    let all: Vec<&Row> = rows.iter().collect();
    print_table("Open: file to memory", &all, find(RUSQLITE_FULL_PRIVATE));
    let wall = pair_ratios(&pairs, |s| s.wall.as_secs_f64());
    let cpu = pair_ratios(&pairs, |s| s.user + s.sys);
    let user = pair_ratios(&pairs, |s| s.user);
    println!(
        "\n### Open into a full pool / rusqlite into a full private :memory:, round by round\n"
    );
    println!("| measure | median | min | max |");
    println!("| --- | ---: | ---: | ---: |");
    for (what, r) in [
        ("wall time", &wall),
        ("CPU time (user + system)", &cpu),
        ("user CPU time", &user),
    ] {
        println!(
            "| {what} | {:.2}x | {:.2}x | {:.2}x |",
            median(r),
            r[0],
            r[r.len() - 1]
        );
    }

    let growth = crate::rss::in_child(&[RSS_CHILD_ARG, &mib.to_string(), file.to_str().unwrap()]);
    println!(
        "\npeak RSS growth during restore_from of {:.0} MiB into a full pool: {:.1} MiB",
        size as f64 / 1048576.0,
        growth as f64 / 1024.0
    );
    vec![
        Goal::new(
            "restore_from, full pool / rusqlite into full :memory: (median of rounds)",
            median(&wall),
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

/// `a / b` of each pair under `measure`, sorted.
fn pair_ratios(pairs: &[(Sample, Sample)], measure: impl Fn(&Sample) -> f64) -> Vec<f64> {
    let mut r: Vec<f64> = pairs.iter().map(|(a, b)| measure(a) / measure(b)).collect();
    r.sort_by(f64::total_cmp);
    r
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
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
        let faults = usage().2;
        let s = time_route(name, &mut full, file);
        eprintln!(
            "{route}: wall {} user {:.1} ms sys {:.1} ms minor faults {}",
            crate::report::fmt(s.wall),
            s.user * 1e3,
            s.sys * 1e3,
            usage().2 - faults
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
