//! Property test: `restore_from` on randomly corrupted copies of a valid database never
//! panics, and every refusal leaves the in-memory data exactly as it was.

mod common;

use std::sync::OnceLock;

use common::{app, filled_pool};
use diesel_sqlite_backup::{BackupExt, BackupOptions};
use proptest::prelude::*;

/// A valid database file, made once.
fn valid_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("valid.db");
        filled_pool(300, 40).get().unwrap().save_as(&file).unwrap();
        std::fs::read(&file).unwrap()
    })
}

fn cases() -> u32 {
    if std::env::var_os("DSB_LONG").is_some() {
        2_000
    } else {
        64
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Each case overwrites up to 8 byte ranges (header included) and may truncate the file.
    /// With `verify_integrity`, a restore either fails and leaves the 7 original notes, or
    /// succeeds with a database that passes integrity_check.
    #[test]
    fn corrupted_copies_never_damage_the_current_data(
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 1..8),
        positions in proptest::collection::vec(0.0f64..1.0, 8),
        truncate_to in proptest::option::of(0.0f64..1.0),
    ) {
        let mut bytes = valid_image().to_vec();
        for ((len, value), at) in edits.iter().zip(&positions) {
            // Bias half of the edits into the first page, where the header and schema live.
            let limit = if *value % 2 == 0 { 4096.min(bytes.len()) } else { bytes.len() };
            let start = ((*at * limit as f64) as usize).min(bytes.len() - 1);
            let end = (start + len + 1).min(bytes.len());
            for b in &mut bytes[start..end] {
                *b = *value;
            }
        }
        if let Some(fraction) = truncate_to {
            let keep = (fraction * bytes.len() as f64) as usize;
            bytes.truncate(keep);
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corrupt.db");
        std::fs::write(&file, &bytes).unwrap();

        let pool = filled_pool(7, 10);
        let mut conn = pool.get().unwrap();
        match conn.restore_from_with(&file, BackupOptions::default().verify_integrity(true)) {
            Err(_) => prop_assert_eq!(app::note_count(&mut conn), 7),
            Ok(()) => prop_assert_eq!(common::integrity_of(&mut conn), "ok"),
        }
    }
}
