//! Every example runs to completion and says what it did.

use std::path::PathBuf;
use std::process::Command;

/// A plain `cargo test` builds the examples next to the test binaries' `deps/` folder; when
/// only this test target was built (`cargo test --test examples`, nextest), build it here.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building example {name} failed");
    }
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

#[test]
fn quickstart_saves_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(example("quickstart").arg(dir.path().join("notes.db")));
    assert!(out.contains("holds note \"Hello\""), "{out}");
}

#[test]
fn migrate_then_persist_leaves_nothing_pending() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(example("migrate_then_persist").arg(dir.path().join("m.db")));
    assert!(out.contains("applied 2 migrations"), "{out}");
    assert!(out.contains("pending migrations in the file: 0"), "{out}");
}

#[test]
fn open_modify_save_adds_a_note_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    let first = run(example("open_modify_save").arg(&file));
    assert!(first.contains("with 1 notes"), "{first}");
    let second = run(example("open_modify_save").arg(&file));
    assert!(
        second.contains("opened") && second.contains("with 2 notes"),
        "{second}"
    );
}

#[test]
fn save_with_progress_saves_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.db");
    let out = run(example("save_with_progress").arg("4").arg(&file));
    assert!(out.contains("saved 4 MiB"), "{out}");
}

#[test]
fn test_harness_gives_each_test_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(example("test_harness").env("CARGO_TARGET_DIR", dir.path()));
    assert!(out.contains("test_b: own database with 5 notes"), "{out}");
    assert!(out.contains("cloning the template"), "{out}");
    let cached = std::fs::read_dir(dir.path().join("diesel-sqlite-backup-templates"))
        .unwrap()
        .count();
    assert_eq!(cached, 1, "the template was cached once");
}
