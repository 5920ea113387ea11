//! Every file an autosave leaves is a complete commit: readers opening it in a loop while
//! writers commit, and a process SIGKILLed while it autosaves.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_sqlite_backup::{shared_thread_pool, Autosave, AutosaveOptions, SingletonManager};

use super::{add_item, common, items_in, ledger, ledger_pool, MS, PATIENCE};

const WRITERS: u32 = 2;

/// Writers commit continuously; readers open the file in a loop, in this process and in a
/// python3 child. Every state they see is one complete commit, and it only moves forward.
#[test]
fn readers_in_a_loop_always_see_a_complete_commit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busy.db");
    // A connection per writer, each held for the whole run: with fewer, a writer waits for
    // one at checkout and fails once that outlasts the checkout timeout. A writer may wait
    // for the lock while the other commits, so the busy timeout outlasts the run.
    let pool = r2d2::Pool::builder()
        .max_size(WRITERS)
        .thread_pool(shared_thread_pool())
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(PATIENCE)
        .build(SingletonManager::new().busy_timeout(PATIENCE))
        .unwrap();
    let pool = ledger(pool);
    let options = AutosaveOptions::default()
        .every(5 * MS)
        .quiet(Duration::ZERO);
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg(common::python_ledger_reader())
        .arg(&file)
        .arg("3")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| {
                let mut conn = pool.get().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    add_item(&mut conn);
                }
            });
        }
        let mut seen = 0;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let now = items_in(&file);
            assert!(now >= seen, "the file went back from {seen} to {now}");
            seen = now;
        }
        stop.store(true, Ordering::Relaxed);
    });
    let out = python.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python reader: {said}");
    assert!(said.starts_with("ok"), "python reader: {said}");
    let reads: u64 = said.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(reads > 0, "python never read the file");
    let committed = common::scalar(&mut pool.get().unwrap(), "SELECT count(*) AS n FROM item");
    autosave.stop().unwrap();
    assert_eq!(items_in(&file), committed, "stop saves the last commits");
}

const CHILD: &str = "DSB_AUTOSAVE_CHILD";

/// The child of the kill test: restores the ledger if there is one, then commits forever
/// with a fast autosave, saying "ready" once running.
#[test]
fn autosave_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let path = PathBuf::from(path);
    let pool = ledger_pool();
    if path.exists() {
        use diesel_sqlite_backup::BackupExt;
        pool.get().unwrap().restore_from(&path).unwrap();
    }
    let options = AutosaveOptions::default()
        .every(2 * MS)
        .quiet(Duration::ZERO);
    let _autosave = Autosave::start(&pool, &path, options).unwrap();
    println!("ready");
    let mut conn = pool.get().unwrap();
    loop {
        add_item(&mut conn);
    }
}

/// A process that autosaves while committing is SIGKILLed 25 times (2,000 with DSB_LONG=1)
/// at spread-out moments. After every kill the file is sound, one complete commit, never
/// older than the last state a kill left, and abandoned temporary files do not pile up.
#[test]
fn killed_autosaving_process_leaves_a_complete_commit() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("killed.db");
    let kills = if std::env::var_os("DSB_LONG").is_some() {
        2_000
    } else {
        25
    };
    let mut last = 0;
    for i in 0..kills {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "durability::autosave_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.ends_with("ready"))),
            "child {i} did not start"
        );
        // A deterministic spread over 0..150 ms of committing and saving.
        std::thread::sleep(MS * ((i as u32 * 7919) % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        let now = items_in(&file);
        assert!(
            now >= last,
            "kill {i}: the file went back from {last} to {now}"
        );
        last = now;
        let temps = common::temp_files_with_data(dir.path());
        assert!(
            temps.len() <= 1,
            "kill {i}: temporary files pile up: {temps:?}"
        );
    }
    eprintln!("{kills} kills, {last} commits saved");
}
