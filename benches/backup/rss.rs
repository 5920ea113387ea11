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

/// Builds a database of `mib` MiB, then returns how many KiB the peak RSS rose above the
/// RSS before a `save_as` of it.
pub fn save_as_peak_growth(mib: u64, dir: &Path) -> u64 {
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
