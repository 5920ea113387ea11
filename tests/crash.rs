//! Killed mid-save, and the order of the syscalls that make a save durable.
//!
//! Set `DSB_LONG=1` for the long mode (thousands of kills).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::app;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{BackupExt, TEMP_SUFFIX};

const CHILD: &str = "DSB_CRASH_CHILD";

fn long_mode() -> bool {
    std::env::var_os("DSB_LONG").is_some()
}

/// A database file with `notes` notes and a `marker` row saying `label`.
fn make_db(path: &Path, label: &str, notes: usize, body_len: usize) {
    let pool = common::filled_pool(notes, body_len);
    let mut c = pool.get().unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE marker(label TEXT); INSERT INTO marker VALUES ('{label}');"
    ))
    .unwrap();
    c.save_as(path).unwrap();
}

/// The saving child: loads `source` into a pool, says "ready", then saves onto `dest`
/// again and again, saying "saved" after each, until it is killed.
#[test]
fn crash_child_saver() {
    let Ok(args) = std::env::var(CHILD) else {
        return; // runs only as the child of killed_mid_save_leaves_old_or_new
    };
    let (source, dest) = args.split_once('\n').unwrap();
    let pool = diesel_sqlite_backup::memory_pool().unwrap();
    let mut c = pool.get().unwrap();
    c.restore_from(source).unwrap();
    println!("ready");
    loop {
        c.save_as(dest).unwrap();
        println!("saved");
    }
}

/// What a destination holds after a kill: (marker, notes).
fn inspect(dest: &Path) -> (String, i64) {
    assert_eq!(
        common::integrity(dest),
        "ok",
        "torn destination after a kill"
    );
    let mut c = SqliteConnection::establish(dest.to_str().unwrap()).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Label {
        #[diesel(sql_type = diesel::sql_types::Text)]
        label: String,
    }
    use diesel::RunQueryDsl;
    let label = diesel::sql_query("SELECT label FROM marker")
        .get_result::<Label>(&mut c)
        .unwrap()
        .label;
    (label, app::note_count(&mut c))
}

/// A process saving a ~10 MB database over an older one is SIGKILLed at spread-out moments
/// (at least 25 times; thousands in long mode). After every kill the destination opens,
/// passes integrity_check, and is entirely the old database or entirely the new one.
/// Leftover temporary files carry the documented `.dsb-tmp` suffix.
#[cfg(unix)]
#[test]
fn killed_mid_save_leaves_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let old = dir.path().join("old.db");
    let dest = dir.path().join("dest.db");
    make_db(&source, "new", 5_000, 2_000);
    make_db(&old, "old", 100, 10);
    let kills = if long_mode() { 2_000 } else { 25 };

    let mut save_time = Duration::from_millis(100);
    let (mut saw_old, mut saw_new, mut leftovers) = (0, 0, 0);
    for i in 0..kills {
        std::fs::copy(&old, &dest).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_saver",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{}\n{}", source.display(), dest.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let ready = loop {
            let (line, at) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child ready");
            // The test harness may print "test ... " on the same line first.
            if line.ends_with("ready") {
                break at;
            }
        };
        if i == 0 {
            // Learn how long one save takes, to spread the kills over about two saves.
            if let Ok((_, at)) = rx.recv_timeout(Duration::from_secs(60)) {
                save_time = at - ready;
            }
        }
        // A deterministic spread over [0, 2 x save time].
        let spread = save_time * 2 * ((i as u32 * 7919) % 1000) / 1000;
        std::thread::sleep(spread.saturating_sub(ready.elapsed()));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        match inspect(&dest) {
            (label, 100) if label == "old" => saw_old += 1,
            (label, 5_000) if label == "new" => saw_new += 1,
            other => {
                panic!("kill {i}: destination is neither the old nor the new database: {other:?}")
            }
        }
        // Each child's first save removes what the child killed before it left, so at most
        // the file of the save this kill interrupted remains.
        let temps = common::temp_files_with_data(dir.path());
        assert!(
            temps.len() <= 1,
            "kill {i}: abandoned temporary files pile up: {temps:?}"
        );
        for temp in temps {
            assert!(temp
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".dest.db."));
            leftovers += 1;
        }
    }
    eprintln!("{kills} kills: {saw_old} left the old file, {saw_new} the new one, {leftovers} times a temporary file was left");
    assert_eq!(saw_old + saw_new, kills);
    // The next save to the destination clears the last one.
    common::filled_pool(1, 1)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap();
    assert_eq!(
        common::temp_files_with_data(dir.path()),
        Vec::<PathBuf>::new()
    );
}

/// The child for the syscall-order test: one save.
#[test]
fn durability_child_saver() {
    let Ok(dest) = std::env::var("DSB_DURABILITY_CHILD") else {
        return;
    };
    let pool = common::filled_pool(200, 100);
    pool.get().unwrap().save_as(&dest).unwrap();
}

/// Under strace (when installed): the temporary file is fsynced before it is renamed over
/// the destination, and the directory is fsynced after the rename. Skipping either fsync
/// makes this test fail.
#[cfg(target_os = "linux")]
#[test]
fn save_fsyncs_file_then_renames_then_fsyncs_directory() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("durable.db");
    let env = ("DSB_DURABILITY_CHILD", dest.as_os_str());
    let Some(calls) = common::strace::trace_child("durability_child_saver", env) else {
        return;
    };
    let is_temp = |c: &common::strace::Syscall| c.path.to_string_lossy().ends_with(TEMP_SUFFIX);
    let rename = calls
        .iter()
        .position(|c| c.name == "rename" && is_temp(c))
        .expect("a rename");
    assert!(
        calls[..rename]
            .iter()
            .any(|c| c.name == "fsync" && is_temp(c)),
        "no fsync of the temporary file before the rename: {calls:?}"
    );
    assert!(
        calls[rename..]
            .iter()
            .any(|c| c.name == "fsync" && c.path == dir.path()),
        "no fsync of the directory after the rename: {calls:?}"
    );
}
