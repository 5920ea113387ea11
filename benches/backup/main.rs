//! `cargo bench --bench backup [--features async] [-- --mib 200 --rounds 5 --rss-mib 200,1024
//! --dir PATH] [--only open|incremental|autosave|attribute|async]]`
//!
//! `--profile ROUTE MIB DIR` runs one route once, for callgrind (`profile.rs`);
//! `benches/compare.sh` compares two commits with either.
//!
//! Times every way to get the same durable file out of (and back into) an in-memory SQLite
//! database, interleaved round by round on the same content, and prints medians, MiB/s and
//! ratios to `save_as`. Also measures the peak RSS growth while `save_as` runs, and the cost
//! of a pool checkout.

#[cfg(feature = "async")]
mod asynchronous;
mod attribute;
mod autosave;
mod incremental;
mod methods;
mod open;
mod profile;
#[cfg(feature = "replica")]
mod replica;
mod report;
mod rss;
mod snapshot;
mod template;

use std::path::PathBuf;

use report::{ratio, Goal, Row};

pub struct Args {
    pub mib: u64,
    pub rounds: usize,
    pub rss_mib: Vec<u64>,
    pub dir: PathBuf,
    /// `--only open` (or `incremental`, `autosave`): run that section alone.
    pub only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        mib: 200,
        rounds: 5,
        rss_mib: vec![200, 1024],
        dir: std::env::temp_dir(),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--mib" => args.mib = value().parse().expect("--mib N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--rss-mib" => {
                args.rss_mib = value()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().expect("--rss-mib N,M"))
                    .collect()
            }
            "--dir" => args.dir = PathBuf::from(value()),
            "--only" => args.only = Some(value()),
            "--bench" => {} // cargo passes this to harness = false benches
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let mut raw = std::env::args().skip(1);
    match raw.next().as_deref() {
        Some(snapshot::RSS_CHILD_ARG) => {
            let mib = raw.next().and_then(|m| m.parse().ok()).expect("MiB");
            snapshot::snapshot_peak_growth_child(mib);
            return;
        }
        Some(rss::SAVE_CHILD_ARG) => {
            let mib = raw.next().and_then(|m| m.parse().ok()).expect("MiB");
            let dir = raw.next().expect("directory");
            rss::save_as_peak_growth_child(mib, std::path::Path::new(&dir));
            return;
        }
        Some(open::RSS_CHILD_ARG) => {
            let mib = raw.next().and_then(|m| m.parse().ok()).expect("MiB");
            open::restore_peak_growth_child(mib, std::path::Path::new(&raw.next().unwrap()));
            return;
        }
        Some(open::PROFILE_ARG) => {
            let route = raw.next().expect("route");
            let mib = raw.next().and_then(|m| m.parse().ok()).expect("MiB");
            let file = raw.next().expect("file");
            // cargo bench appends `--bench`, which is no count.
            let repeat = raw.next().and_then(|r| r.parse().ok()).unwrap_or(1);
            open::profile_child(&route, mib, std::path::Path::new(&file), repeat);
            return;
        }
        Some(profile::ARG) => {
            let route = raw.next().expect("route");
            let mib = raw.next().and_then(|m| m.parse().ok()).expect("MiB");
            let dir = raw.next().expect("directory");
            profile::run(&route, mib, std::path::Path::new(&dir));
            return;
        }
        _ => {}
    }
    let args = parse_args();
    let work = tempfile::tempdir_in(&args.dir).expect("bench dir");
    println!(
        "# diesel-sqlite-backup benchmark: {} MiB database, {} rounds, files in {}",
        args.mib,
        args.rounds,
        args.dir.display()
    );
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let only = match args.only.as_deref() {
        Some("open") => Some(open::run(args.mib, args.rounds, work.path())),
        #[cfg(feature = "replica")]
        Some("replica") => Some(replica::run(args.mib, args.rounds, work.path())),
        Some("incremental") => Some(incremental::run(args.mib, args.rounds, work.path())),
        Some("autosave") => Some(autosave::run(work.path(), args.rounds)),
        Some("attribute") => Some(attribute::run(args.rounds)),
        #[cfg(feature = "async")]
        Some("async") => Some(asynchronous::run(args.mib, args.rounds, work.path())),
        #[cfg(not(feature = "async"))]
        Some("async") => panic!("--only async: run with `cargo bench --features async`"),
        Some(other) => panic!("--only {other}: no such section"),
        None => None,
    };
    if let Some(goals) = only {
        report::print_goals(&goals);
        return;
    }
    let mut bench = methods::Bench::new(args.mib, work.path());
    println!(
        "database: {} pages of {} bytes ({} MiB)",
        bench.pages,
        bench.page_size,
        bench.bytes / (1024 * 1024)
    );
    let rows = bench.run_all(args.rounds);
    let find = |name: &str| rows.iter().find(|r| r.name == name).expect(name);

    let save_rows: Vec<&Row> = rows.iter().filter(|r| r.name.starts_with('1')).collect();
    let base = find(methods::SAVE);
    report::print_table("Save: memory to a durable file", &save_rows, base);
    let pool_rows: Vec<&Row> = rows.iter().filter(|r| r.name.starts_with('3')).collect();
    report::print_table("Pool checkout + SELECT 1", &pool_rows, find(methods::POOL));

    let open_goals = open::run(args.mib, args.rounds, work.path());
    let template_goals = template::run(work.path());
    let snapshot_goals = snapshot::run(args.mib, args.rounds, work.path());
    let autosave_goals = autosave::run(work.path(), args.rounds);

    let rss: Vec<(u64, u64)> = args
        .rss_mib
        .iter()
        .map(|&mib| (mib, rss::save_as_peak_growth(mib, work.path())))
        .collect();
    println!("\n### Peak RSS growth during save_as\n");
    println!("| database | peak RSS growth |");
    println!("| ---: | ---: |");
    for (mib, kib) in &rss {
        println!("| {mib} MiB | {:.1} MiB |", *kib as f64 / 1024.0);
    }

    let rusqlite_best = [
        find(methods::RUSQLITE_BACKUP),
        find(methods::RUSQLITE_STEP_ALL),
    ]
    .into_iter()
    .min_by_key(|r| r.per_op())
    .unwrap();
    let mut goals = vec![
        Goal::new(
            "save_as / faster rusqlite route",
            ratio(base, rusqlite_best),
            1.0,
        ),
        Goal::new(
            "save_as / VACUUM INTO",
            ratio(base, find(methods::VACUUM_INTO)),
            0.8,
        ),
        Goal::new(
            "save_as / file copy + fsync",
            ratio(base, find(methods::FILE_COPY)),
            1.5,
        ),
        Goal::new(
            "stepped save_as (100) / save_as one-shot",
            ratio(find(methods::SAVE_100), find(methods::SAVE_ALL)),
            1.1,
        ),
        Goal::new(
            "pool checkout / diesel ConnectionManager",
            ratio(find(methods::POOL), find(methods::DIESEL_POOL)),
            1.2,
        ),
    ];
    if let Some(py) = rows.iter().find(|r| r.name == methods::PYTHON) {
        goals.push(Goal::new(
            "save_as / Python sqlite3 backup",
            ratio(base, py),
            1.0,
        ));
    }
    for (mib, kib) in &rss {
        goals.push(Goal {
            what: format!("peak RSS growth at {mib} MiB"),
            value: *kib as f64 / 1024.0,
            limit: 32.0,
            unit: " MiB",
        });
    }
    goals.extend(open_goals);
    #[cfg(feature = "replica")] // --features replica
    goals.extend(replica::run(args.mib, args.rounds, work.path()));
    goals.extend(template_goals);
    goals.extend(attribute::run(args.rounds));
    goals.extend(snapshot_goals);
    goals.extend(incremental::run(args.mib, args.rounds, work.path()));
    goals.extend(autosave_goals);
    #[cfg(feature = "async")]
    goals.extend(asynchronous::run(args.mib, args.rounds, work.path()));
    report::print_goals(&goals);
}

impl Goal {
    fn new(what: &str, value: f64, limit: f64) -> Goal {
        Goal {
            what: what.to_owned(),
            value,
            limit,
            unit: "x",
        }
    }
}
