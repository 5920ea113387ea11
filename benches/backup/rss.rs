//! Peak resident memory added by `save_as`, read from /proc after resetting the high-water
//! mark through /proc/self/clear_refs.

use std::path::Path;

use diesel_sqlite_backup::BackupExt;

pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The argument that makes this benchmark measure one save's memory and exit.
pub const SAVE_CHILD_ARG: &str = "--save-rss-child";

/// How many KiB the peak RSS rose above the RSS before a `save_as` of a `mib` MiB database,
/// measured in a fresh process: in this one, memory freed by earlier rows would be reused
/// and hide the growth.
pub fn save_as_peak_growth(mib: u64, dir: &Path) -> u64 {
    in_child(&[SAVE_CHILD_ARG, &mib.to_string(), dir.to_str().unwrap()])
}

/// Runs this benchmark again with `args` (a child mode that prints one number of KiB) and
/// returns that number.
pub fn in_child(args: &[&str]) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .expect("benchmark child");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("child {args:?} said {text:?}"))
}

/// The child's side: prints the growth in KiB.
pub fn save_as_peak_growth_child(mib: u64, dir: &Path) {
    println!("{}", measure_save(mib, dir));
}

fn measure_save(mib: u64, dir: &Path) -> u64 {
    let pool = crate::methods::filled_pool(mib);
    let out = dir.join("rss.db");
    let mut conn = pool.get().unwrap();
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = status_kib("VmRSS:");
    conn.save_as(&out).unwrap();
    let peak = status_kib("VmHWM:");
    std::fs::remove_file(&out).unwrap();
    peak.saturating_sub(before)
}
