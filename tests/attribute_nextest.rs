//! Templates are built once per (migrations, fixtures) set, not once per test or process:
//! runs tests/attribute_suite.rs (50 tests, two sets) with a fresh template folder and a
//! build log, under `cargo test` (one process) and `cargo nextest run` (a process per test,
//! 8 at once, so that builders race), and counts the builds the log recorded.

use std::collections::BTreeMap;
use std::process::Command;

/// Runs `cargo <args> --test attribute_suite` with a fresh cache; returns its output and
/// the builds per key.
fn builds_under(args: &[&str]) -> (String, BTreeMap<String, usize>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("builds.log");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .args(["--test", "attribute_suite"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "DIESEL_SQLITE_BACKUP_TEMPLATES",
            dir.path().join("templates"),
        )
        .env("DIESEL_SQLITE_BACKUP_BUILD_LOG", &log)
        .env_remove("NEXTEST");
    if cfg!(feature = "async") {
        cmd.args(["--features", "async"]); // the outer build's features: no rebuild
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    let mut builds = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        let key = line.split(' ').next().unwrap().to_owned();
        *builds.entry(key).or_insert(0) += 1;
    }
    let templates = std::fs::read_dir(dir.path().join("templates"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "db")
        })
        .count();
    assert_eq!(templates, 2, "one cached file per set");
    (text, builds)
}

#[test]
fn one_process_builds_each_set_once() {
    let (out, builds) = builds_under(&["test", "-q"]);
    assert!(out.contains("50 passed"), "{out}");
    assert_eq!(builds.len(), 2, "two sets: {builds:?}");
    assert!(builds.values().all(|&n| n == 1), "{builds:?}");
}

#[test]
fn a_process_per_test_builds_each_set_once() {
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output();
    if !nextest.is_ok_and(|o| o.status.success()) {
        eprintln!("cargo-nextest is not installed: skipped");
        return;
    }
    let (out, builds) = builds_under(&["nextest", "run", "--test-threads", "8"]);
    assert!(out.contains("50 passed"), "{out}");
    assert_eq!(builds.len(), 2, "two sets: {builds:?}");
    assert!(
        builds.values().all(|&n| n == 1),
        "50 processes, 8 at once, migrate once per set: {builds:?}"
    );
}
