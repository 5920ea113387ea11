//! Every example runs to completion, says what it did, and writes where it says it wrote:
//! to the path given on its command line, or else into a new private temporary folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// The example's binary, built first (once per test process) so a test never runs a stale
/// one: `cargo test --test examples` and nextest build only this test target, and even a
/// plain `cargo test` would leave an example that fails to compile at its old binary. The
/// build is cargo's no-op when the example is up to date.
fn example(name: &str) -> Command {
    example_with(name, &[])
}

/// `example` of one that needs `features` (its `required-features`).
fn example_with(name: &str, features: &[&str]) -> Command {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if !built.contains(name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--example", name])
            .args(features.iter().flat_map(|f| ["--features", f]))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // The features this test was built with: the async example requires `async`, and
        // the others then reuse the same build of the crate.
        if cfg!(feature = "async") {
            build.args(["--features", "async"]);
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) if profile != "debug" => {
                build.args(["--profile", profile]);
            }
            _ => {}
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building example {name} failed");
        built.insert(name.to_owned());
    }
    drop(built);
    assert!(
        path.exists(),
        "example {name} was not built at {}",
        path.display()
    );
    Command::new(path)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The path an example printed: the text of the line starting with `prefix`, up to
/// `suffix` when one is given.
fn printed_path(out: &str, prefix: &str, suffix: Option<&str>) -> PathBuf {
    let line = out
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"));
    let path = match suffix {
        Some(suffix) => line.rsplit_once(suffix).map_or(line, |(path, _)| path),
        None => line,
    };
    PathBuf::from(path)
}

/// `path` is a complete SQLite database file.
fn assert_database(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"SQLite format 3\0"),
        "{} is not a SQLite database",
        path.display()
    );
}

/// Runs an example without a path argument, with the system temp dir pointed at `tmp`, so
/// its default output folder lands there and nowhere else.
fn in_temp_dir<'a>(cmd: &'a mut Command, tmp: &Path) -> &'a mut Command {
    cmd.env("TMPDIR", tmp).env("TMP", tmp).env("TEMP", tmp)
}

/// A default output path is `<tmp>/<fresh folder>/<name>`, the folder private to the user.
fn assert_private_default(path: &Path, tmp: &Path, name: &str) {
    assert_eq!(path.file_name().unwrap(), name, "{}", path.display());
    let folder = path.parent().unwrap();
    assert_eq!(
        folder.parent().unwrap(),
        tmp,
        "{} is not in a fresh folder of the temp dir",
        path.display()
    );
    assert_database(path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is not private", folder.display());
    }
}

#[test]
fn quickstart_saves_to_the_given_path_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.db");
    let out = run(example("quickstart").arg(&file));
    assert!(out.contains("holds note \"Hello\""), "{out}");
    let printed = printed_path(&out, "saved the in-memory database to ", None);
    assert_eq!(printed, file);
    assert_database(&file);
}

#[test]
fn quickstart_defaults_to_a_new_private_temp_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for _ in 0..2 {
        let out = run(in_temp_dir(&mut example("quickstart"), tmp.path()));
        assert!(out.contains("holds note \"Hello\""), "{out}");
        let printed = printed_path(&out, "saved the in-memory database to ", None);
        assert_private_default(&printed, tmp.path(), "notes.db");
        paths.push(printed);
    }
    assert_ne!(paths[0], paths[1], "every run gets its own folder");
}

#[test]
fn migrate_then_persist_leaves_nothing_pending() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.db");
    let out = run(example("migrate_then_persist").arg(&file));
    assert!(out.contains("applied 2 migrations"), "{out}");
    assert!(out.contains("pending migrations in the file: 0"), "{out}");
    assert_eq!(printed_path(&out, "persisted to ", None), file);
    assert_database(&file);
}

#[test]
fn migrate_then_persist_defaults_to_a_new_private_temp_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(in_temp_dir(
        &mut example("migrate_then_persist"),
        tmp.path(),
    ));
    assert!(out.contains("pending migrations in the file: 0"), "{out}");
    let printed = printed_path(&out, "persisted to ", None);
    assert_private_default(&printed, tmp.path(), "migrated.db");
}

#[test]
fn open_modify_save_adds_a_note_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    let first = run(example("open_modify_save").arg(&file));
    assert!(first.contains("with 1 notes"), "{first}");
    assert_eq!(printed_path(&first, "created ", None), file);
    assert_eq!(printed_path(&first, "saved ", Some(" with ")), file);
    let second = run(example("open_modify_save").arg(&file));
    assert!(
        second.contains("opened") && second.contains("with 2 notes"),
        "{second}"
    );
    assert_eq!(printed_path(&second, "saved ", Some(" with ")), file);
    assert_database(&file);
}

#[test]
fn open_modify_save_defaults_to_a_new_private_temp_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(in_temp_dir(&mut example("open_modify_save"), tmp.path()));
    assert!(out.contains("with 1 notes"), "{out}");
    let printed = printed_path(&out, "saved ", Some(" with "));
    assert_private_default(&printed, tmp.path(), "document.db");
}

#[test]
fn save_with_progress_saves_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.db");
    let out = run(example("save_with_progress").arg("4").arg(&file));
    assert!(out.contains("saved 4 MiB"), "{out}");
    assert_eq!(printed_path(&out, "saved 4 MiB to ", None), file);
    assert_database(&file);
}

#[test]
fn save_with_progress_defaults_to_a_new_private_temp_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(in_temp_dir(
        example("save_with_progress").arg("1"),
        tmp.path(),
    ));
    let printed = printed_path(&out, "saved 1 MiB to ", None);
    assert_private_default(&printed, tmp.path(), "big.db");
}

/// The example's tests, called by its `main`, each see their own database, copied from one
/// template cached in the folder `DIESEL_SQLITE_BACKUP_TEMPLATES` names.
#[test]
fn test_harness_gives_each_test_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(example("test_harness").env("DIESEL_SQLITE_BACKUP_TEMPLATES", dir.path()));
    for line in [
        "test_a: own database with 3 notes",
        "test_b: own database with 5 notes",
        "test_c: own database with 0 notes",
        "cargo test --example test_harness",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let templates: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "db"))
        .collect();
    assert_eq!(templates.len(), 1, "the template was cached once");
    assert_database(&templates[0]);
}

#[test]
fn snapshot_undo_puts_the_notes_back() {
    let out = run(&mut example("snapshot_undo"));
    assert!(out.contains("before the edit: 3 notes"), "{out}");
    assert!(out.contains("after the edit: 0 notes"), "{out}");
    assert!(out.contains("after undo: 3 notes"), "{out}");
}

/// The autosave example: its notes reach the file while it runs, a `kill -9` loses at most
/// the last moments, and the next run opens the file and carries on.
#[cfg(unix)]
#[test]
fn autosave_survives_a_kill_and_carries_on() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.db");
    let first = run(example("autosave").arg(&file).arg("3"));
    assert!(first.contains("with 3 notes"), "{first}");

    let mut child = example("autosave")
        .arg(&file)
        .arg("100000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l == "wrote note 13")));
    // Nobody asks it to save: the file catches up with the running app on its own.
    let start = std::time::Instant::now();
    while notes_in(&file) < 13 {
        assert!(start.elapsed().as_secs() < 60, "autosave never caught up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let survived = notes_in(&file);
    assert!(survived >= 13);

    let third = run(example("autosave").arg(&file).arg("2"));
    assert!(third.contains(&format!("with {survived} notes")), "{third}");
    assert!(
        third.contains(&format!("with {} notes", survived + 2)),
        "{third}"
    );
}

/// The async service: its tasks' notes all reach the autosaved file, and every backup it
/// took while they wrote is a complete database.
#[cfg(feature = "async")]
#[test]
fn async_service_autosaves_every_note_and_takes_backups() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.db");
    let out = run(example("async_service").arg(&file));
    assert_eq!(printed_path(&out, "autosaving to ", None), file);
    let total: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("4 tasks wrote "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of notes in:\n{out}"));
    assert!(total > 0, "{out}");
    let autosaved = format!("autosaved {total} notes to {}", file.display());
    assert!(out.contains(&autosaved), "{out}");
    assert_eq!(notes_in(&file), total);
    let backups: Vec<PathBuf> = out
        .lines()
        .filter_map(|l| l.strip_prefix("backup ")?.split_once(": saved "))
        .map(|(_, path)| PathBuf::from(path))
        .collect();
    assert!(!backups.is_empty(), "{out}");
    for backup in backups {
        assert_eq!(backup.parent(), Some(dir.path()));
        assert!(
            (0..=total).contains(&notes_in(&backup)),
            "{}",
            backup.display()
        );
    }
}

#[cfg(feature = "async")]
#[test]
fn async_service_defaults_to_a_new_private_temp_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(in_temp_dir(&mut example("async_service"), tmp.path()));
    let printed = printed_path(&out, "autosaving to ", None);
    assert_private_default(&printed, tmp.path(), "live.db");
}

/// Notes in a database file, through a plain connection.
fn notes_in(path: &Path) -> i64 {
    use diesel::{Connection, SqliteConnection};
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    // The example's incremental saves hold the file's exclusive lock while they write.
    diesel::connection::SimpleConnection::batch_execute(&mut c, "PRAGMA busy_timeout = 60000")
        .unwrap();
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel::RunQueryDsl;
    diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<N>(&mut c)
        .unwrap()
        .n
}

#[cfg(feature = "replica")]
#[test]
fn replica_restores_a_point_in_time_and_the_latest_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(example_with("replica", &["replica"]).arg(tmp.path()));
    assert!(
        out.contains("restored sync 2 (before the second note): 1 notes"),
        "{out}"
    );
    assert!(out.contains("restored sync 3 (latest): 2 notes"), "{out}");
    let objects = printed_path(&out, "replica in ", None).join("syncs");
    assert_eq!(
        std::fs::read_dir(&objects).unwrap().count(),
        3,
        "{}",
        objects.display()
    );
}
