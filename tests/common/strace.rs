//! Syscall-order tests: run one child test of this binary under `strace -f` and read back
//! which file each traced call acted on. A crash test cannot see a missing fsync (the page
//! cache survives a SIGKILL); the order of the calls can.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One traced call: `open`, `fsync` (or fdatasync), `write` (or pwrite64), `truncate`,
/// `rename` (the path is the source) or `unlink`, and the file it acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub name: &'static str,
    pub path: PathBuf,
}

/// Runs the test `child` of this test binary under strace, with `env` set, and returns its
/// calls in order. `None` when strace is not installed (the caller skips, and says so).
pub fn trace_child(child: &str, env: (&str, &OsStr)) -> Option<Vec<Syscall>> {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace not installed: syscall order not checked");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace.txt");
    let calls = "trace=openat,pwrite64,write,fsync,fdatasync,ftruncate,rename,renameat,renameat2,unlink,unlinkat";
    let status = Command::new("strace")
        .args(["-f", "-qq", "-e", calls, "-o"])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", child, "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{child} failed under strace");
    Some(parse(&std::fs::read_to_string(&log).unwrap()))
}

/// strace lines (`PID call(args) = result`) as calls on paths, descriptors resolved through
/// the `openat`s before them.
fn parse(log: &str) -> Vec<Syscall> {
    let mut fds: std::collections::HashMap<String, PathBuf> = Default::default();
    let mut calls = Vec::new();
    for line in log.lines() {
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        let first_path = || args.split('"').nth(1).map(PathBuf::from);
        let fd_path = || fds.get(args.split([',', ')']).next().unwrap()).cloned();
        let (name, path) = match name {
            "openat" => {
                let result = call.rsplit_once("= ").map(|(_, r)| r.trim().to_owned());
                if let (Some(path), Some(fd)) = (first_path(), result) {
                    fds.insert(fd, path.clone());
                    calls.push(Syscall { name: "open", path });
                }
                continue;
            }
            "fsync" | "fdatasync" => ("fsync", fd_path()),
            "write" | "pwrite64" => ("write", fd_path()),
            "ftruncate" => ("truncate", fd_path()),
            "rename" | "renameat" | "renameat2" => ("rename", first_path()),
            "unlink" | "unlinkat" => ("unlink", first_path()),
            _ => continue,
        };
        if let Some(path) = path {
            calls.push(Syscall { name, path });
        }
    }
    calls
}
