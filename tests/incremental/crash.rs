//! Killed at every moment of an incremental save, and the order of its syscalls.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, BackupExt};

use crate::support::*;

const CHILD: &str = "DSB_INCREMENTAL_CRASH";
const ROWS: usize = 5_000;

fn journal(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// The child: loads the file, then changes 1% of the rows (or the percentage given) and saves
/// in place, again and
/// again, until it SIGKILLs itself at its `kill_at`-th progress report (reports come after
/// the source is read, after the journal is durable, after every page written, after the
/// sync: every phase of the save).
#[test]
fn incremental_crash_child() {
    let Ok(args) = std::env::var(CHILD) else {
        return; // runs only as the child of killed_mid_incremental_save_never_tears
    };
    let mut args = args.split('\n');
    let (path, kill_at, percent) = (args.next().unwrap(), args.next().unwrap(), args.next());
    let kill_at: u64 = kill_at.parse().unwrap();
    let percent: f64 = percent.map_or(1.0, |p| p.parse().unwrap());
    let pool = memory_pool().unwrap();
    let mut c = pool.get().unwrap();
    c.restore_from(path).unwrap();
    let reports = std::cell::Cell::new(0u64);
    for round in 0.. {
        transfer(&mut c, ROWS, percent, round + kill_at);
        c.save_as_with(
            path,
            incremental().on_progress(|_| {
                reports.set(reports.get() + 1);
                if reports.get() == kill_at {
                    // SAFETY: kill(2) on our own pid; no memory is involved.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
            }),
        )
        .unwrap();
    }
}

/// A process saving incrementally is SIGKILLed at spread-out moments (30 times; 2,000 with
/// `DSB_LONG=1`). After every kill a plain SQLite reader (Python) opens the file, rolling
/// back any hot journal, and finds `integrity_check` ok and the ledger invariant intact.
#[test]
fn killed_mid_incremental_save_never_tears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    ledger(ROWS).get().unwrap().save_as(&path).unwrap();
    let long = std::env::var_os("DSB_LONG").is_some();
    let kills = if long { 2_000 } else { 30 };
    // Report numbers to kill at: the first three saves of a child (about 20 reports each),
    // or the first twelve in the long mode. 13 is coprime to both, so every one is used.
    let span = if long { 240 } else { 60 };
    let mut hot = 0;
    for i in 0..kills {
        let kill_at = 1 + (i * 13) % span;
        run_child_until_killed(
            "crash::incremental_crash_child",
            (CHILD, format!("{}\n{kill_at}", path.display())),
            &format!("kill {i}"),
        );
        if journal(&path).exists() {
            hot += 1;
        }
        assert_recovered(&path, &format!("kill {i} (report {kill_at})"));
        assert!(
            !journal(&path).exists(),
            "the reader rolled the journal back"
        );
    }
    eprintln!("{kills} kills, {hot} left a hot journal");
    assert!(
        hot > 0,
        "no kill landed while a journal was live: the test saw nothing"
    );
}

/// A save whose journal is far larger than the chunks it is streamed in (half the rows
/// changed: over 1 MiB of original pages), killed once at every progress report of the
/// first save: after the source is read, after the journal is durable, after each run of
/// pages, after the sync. Every kill from the journal on must leave a journal that restores
/// every page, whichever chunk it came in.
#[test]
fn killed_mid_save_with_a_large_journal_never_tears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    ledger(ROWS).get().unwrap().save_as(&path).unwrap();
    let mut hot = 0;
    for kill_at in 1..=40 {
        run_child_until_killed(
            "crash::incremental_crash_child",
            (CHILD, format!("{}\n{kill_at}\n50", path.display())),
            &format!("report {kill_at}"),
        );
        let journal_len = std::fs::metadata(journal(&path)).map_or(0, |m| m.len());
        if journal_len > 0 {
            hot += 1;
            assert!(journal_len > 1 << 20, "report {kill_at}: a small journal");
        }
        assert_recovered(&path, &format!("report {kill_at}"));
    }
    eprintln!("{hot} of 40 kills left a hot journal");
    assert!(hot >= 5, "only {hot} kills left a hot journal");
}

/// The child of the syscall-order test: a full save, a 1% change, one incremental save.
#[test]
fn incremental_strace_child() {
    let Ok(path) = std::env::var("DSB_INCREMENTAL_STRACE") else {
        return;
    };
    let pool = ledger(2_000);
    pool.get().unwrap().save_as(&path).unwrap();
    transfer(&mut pool.get().unwrap(), 2_000, 1.0, 1);
    pool.get().unwrap().batch_execute("SELECT 1").unwrap();
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
}

/// Under strace (when installed): the journal and its directory are fsynced before the first
/// write to the database file, and the database is fsynced before the journal is deleted
/// (the commit point). A crash test cannot see a missing fsync (the page cache survives a
/// SIGKILL); this one can.
#[cfg(target_os = "linux")]
#[test]
fn incremental_save_syncs_journal_then_pages_then_deletes_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.db");
    let env = ("DSB_INCREMENTAL_STRACE", path.as_os_str());
    let Some(calls) = crate::common::strace::trace_child("crash::incremental_strace_child", env)
    else {
        return;
    };
    let journal = journal(&path);
    // Each call as "name db|journal|dir"; calls on other files are left out.
    let events: Vec<String> = calls
        .iter()
        .filter_map(|c| {
            let which = if c.path == path {
                "db"
            } else if c.path == journal {
                "journal"
            } else if c.path == dir.path() {
                "dir"
            } else {
                return None;
            };
            Some(format!("{} {which}", c.name))
        })
        .collect();
    let pos = |e: &str| events.iter().position(|x| x == e);
    let journal_open = pos("open journal").expect("a journal was created");
    let after: Vec<&String> = events[journal_open..].iter().collect();
    let idx = |e: &str| after.iter().position(|x| *x == e);
    let first_db_write = idx("write db").expect("pages written to the database");
    let journal_sync = idx("fsync journal").expect("journal fsynced");
    let dir_sync = idx("fsync dir").expect("directory fsynced");
    let db_sync = idx("fsync db").expect("database fsynced");
    let unlink = idx("unlink journal").expect("journal deleted");
    let last_db_write = after.iter().rposition(|x| *x == "write db").unwrap();
    assert!(
        journal_sync < first_db_write,
        "journal not durable before the pages: {after:?}"
    );
    assert!(
        dir_sync < first_db_write,
        "journal's directory entry not durable first: {after:?}"
    );
    assert!(
        last_db_write < db_sync && db_sync < unlink,
        "pages not durable before the commit: {after:?}"
    );
}
