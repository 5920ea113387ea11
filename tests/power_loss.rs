//! Power loss, not only `kill -9`: every route that writes a user's file is recorded under
//! strace, and every state a power loss may leave of its files (see `power_loss/explorer.py`)
//! is opened by Python's `sqlite3`. Each must pass `integrity_check` and hold exactly the old
//! or the new content, and only the new once the call has returned.
//!
//! `cargo test` explores a bounded set of states at each point; `DSB_LONG=1` widens the
//! families (more subsets, more random draws).

#[path = "power_loss/routes.rs"]
mod routes;

use std::path::Path;
use std::process::{Command, Stdio};

use routes::{AUTOSAVE_ROUTES, IN_PLACE_ROUTES, RENAME_ROUTES};

const CHILD_ENV: &str = "DSB_POWER_LOSS_CHILD";
const EXPLORER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/power_loss/explorer.py");

/// The syscalls the explorer replays (and the `openat` marks).
const TRACED: &str = "trace=openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,\
ftruncate,truncate,fallocate,fsync,fdatasync,close,dup,dup2,dup3,fcntl,rename,renameat,\
renameat2,unlink,unlinkat,link,linkat,copy_file_range,sendfile,mmap";

/// The child: one route, in the folder the parent named.
#[test]
fn power_loss_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (route, page_size, dir) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    routes::run(route, Path::new(dir), page_size.parse().unwrap());
}

/// strace, installed with apt-get when it is missing and we may (as CI does), so the explorer
/// never silently skips where it can run.
fn strace_available() -> bool {
    let found = || {
        Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found() {
        return true;
    }
    let _ = Command::new("sh")
        .args(["-c", "command -v apt-get >/dev/null && [ \"$(id -u)\" = 0 ] && \
                      (apt-get install -y -qq strace || (apt-get update -qq && apt-get install -y -qq strace))"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    found()
}

/// A temporary folder, left on disk when `DSB_KEEP_TRACES` is set (to run the explorer by hand).
struct KeptIfAsked(Option<tempfile::TempDir>);

impl KeptIfAsked {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for KeptIfAsked {
    fn drop(&mut self) {
        if std::env::var_os("DSB_KEEP_TRACES").is_some() {
            let _ = self.0.take().map(tempfile::TempDir::keep);
        }
    }
}

#[derive(Debug)]
struct Explored {
    crash_points: u64,
    states: u64,
    bad: u64,
    report: String,
}

/// Records `route` at `page_size` and explores its crash states.
fn explore(route: &str, page_size: u32) -> Explored {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("DSB_KEEP_TRACES").is_some() {
        eprintln!(
            "{route} at {page_size}: trace and files kept in {}",
            dir.path().display()
        );
    }
    let dir = KeptIfAsked(Some(dir));
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let log = dir.path().join("trace.log");
    routes::prepare(route, &files, page_size);
    // The old version as the child finds it: the explorer's starting point.
    let initial = dir.path().join("initial");
    std::fs::create_dir(&initial).unwrap();
    for entry in std::fs::read_dir(&files).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), initial.join(entry.file_name())).unwrap();
    }
    let status = Command::new("strace")
        .args(["-f", "-qq", "-xx", "-s", "16777216", "-e", TRACED, "-o"])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "power_loss_child",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(
            CHILD_ENV,
            format!("{route}:{page_size}:{}", files.display()),
        )
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{route} at {page_size}: the child failed");
    let db = routes::target(route, &files, page_size);
    let mut explorer = Command::new("python3");
    explorer
        .arg(EXPLORER)
        .arg(&log)
        .arg(&files)
        .arg(db.file_name().unwrap())
        .arg("--initial")
        .arg(&initial);
    if std::env::var_os("DSB_LONG").is_some() {
        explorer.arg("--long");
    }
    let out = explorer.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "explorer failed for {route} at {page_size}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> u64 {
        let key = format!("\"{name}\": ");
        let at = report
            .find(&key)
            .unwrap_or_else(|| panic!("{name} missing: {report}"));
        report[at + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        !report.contains("\"error\""),
        "{route} at {page_size}: {report}"
    );
    // The route really ran as named.
    let renames = field("renames_onto");
    let journal = field("journal_writes");
    match route {
        r if RENAME_ROUTES.contains(&r) => {
            assert_eq!(renames, 1, "{route}: expected a rename: {report}")
        }
        _ => assert_eq!(renames, 0, "{route}: expected a save in place: {report}"),
    }
    if !RENAME_ROUTES.contains(&route) {
        assert!(journal > 0, "{route}: no journal written: {report}");
    }
    assert!(
        report.contains("\"old_is_new\": false"),
        "{route}: nothing changed: {report}"
    );
    Explored {
        crash_points: field("crash_points"),
        states: field("states"),
        bad: field("bad"),
        report,
    }
}

fn explore_routes(routes: &[&str]) {
    if !strace_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing in CI: .ci/run installs it"
        );
        eprintln!("strace is not installed and cannot be: power-loss states not explored");
        return;
    }
    let mut failures = Vec::new();
    for route in routes {
        for &page_size in routes::PAGE_SIZES {
            let e = explore(route, page_size);
            eprintln!(
                "power loss: {route:<20} page {page_size:>5}: {:>4} crash points, {:>5} states, {} bad",
                e.crash_points, e.states, e.bad
            );
            assert!(e.states > 0, "{route} at {page_size}: no state explored");
            if e.bad > 0 {
                failures.push(format!("{route} at {page_size}: {}", e.report));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad crash states:\n{}",
        failures.join("\n")
    );
}

#[cfg(target_os = "linux")]
#[test]
fn renames_survive_power_loss() {
    explore_routes(RENAME_ROUTES);
}

#[cfg(target_os = "linux")]
#[test]
fn saves_in_place_survive_power_loss() {
    explore_routes(IN_PLACE_ROUTES);
}

#[cfg(target_os = "linux")]
#[test]
fn autosave_survives_power_loss() {
    explore_routes(AUTOSAVE_ROUTES);
}
