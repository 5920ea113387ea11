//! Finished files nothing else is changing: every route must give exactly what a plain
//! SQLite reader sees (the Open routes must not refuse them at all).

use std::path::Path;

use super::check::Expect;
use super::matrix::{assert_none, run_all, Policy, Pristine, Source};
use super::py;
use super::routes::{Limits, Route};

/// Queries (one column `n`) run on the source by Python and on the copy by this crate's
/// SQLite: they exercise indexes, views and virtual tables, not just the stored rows.
fn probes(kind: &str) -> &'static [&'static str] {
    match kind {
        k if k.starts_with("page_size:") || k.starts_with("encoding_field:") => &[
            "SELECT count(*) AS n FROM rows_ WHERE label >= 'label 03'",
            "SELECT sum(length(b)) AS n FROM rows_",
        ],
        // The copy is converted to the pool's UTF-8, where BINARY comparisons of non-ASCII
        // text follow code point order rather than UTF-16le byte order (a documented limit),
        // so these probes compare values, not their order.
        "utf16le" | "utf16be" => &[
            "SELECT count(*) AS n FROM words WHERE word = 'Grüße 0'",
            "SELECT count(*) AS n FROM words WHERE substr(word, 1, 3) = '日本語'",
            "SELECT count(*) AS n FROM greek",
            "SELECT sum(length(word)) AS n FROM words",
        ],
        "fts5" | "fts4" => &[
            "SELECT count(*) AS n FROM docs WHERE docs MATCH 'alpha'",
            "SELECT count(*) AS n FROM docs WHERE docs MATCH 'word42'",
        ],
        "rtree" => &[
            "SELECT count(*) AS n FROM boxes WHERE minx >= 100 AND maxx <= 400 AND miny >= 200 AND maxy <= 700",
        ],
        "empty" => &[],
        other => panic!("no probes for {other}"),
    }
}

/// A file of `kind` (see `py::MAKE_FILE`) written and closed by Python.
pub fn made_file(kind: &str) -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wild.db");
    py::run(py::MAKE_FILE, &[file.to_str().unwrap(), kind]);
    Pristine::new(dir, "wild.db", probes(kind))
}

fn readable_file(kind: &str) {
    let pristine = made_file(kind);
    let failures = run_all(
        kind,
        &Route::all(false),
        Policy::Readable,
        Limits::default(),
        |dir| pristine.source(dir),
    );
    assert_none(kind, failures);
}

/// A UTF-16le file with non-ASCII text, an index on it and a view.
#[test]
fn utf16le_file() {
    readable_file("utf16le");
}

/// The same in UTF-16be.
#[test]
fn utf16be_file() {
    readable_file("utf16be");
}

/// 512-byte pages (smaller than the destination's 4096), into empty and used pools.
#[test]
fn page_size_512() {
    readable_file("page_size:512");
}

#[test]
fn page_size_1024() {
    readable_file("page_size:1024");
}

#[test]
fn page_size_8192() {
    readable_file("page_size:8192");
}

/// The largest page size, 65536 (stored as 1 in the header).
#[test]
fn page_size_65536() {
    readable_file("page_size:65536");
}

/// The zero-byte file Python's `sqlite3.connect()` leaves: every SQLite reads it as an
/// empty database, so the Open routes load it as one.
#[test]
fn zero_byte_file() {
    readable_file("empty");
}

/// A header whose text-encoding field says 4 (or 8), which SQLite reads as UTF-8 (the low two
/// bits, 0 meaning UTF-8): copied as it was, it broke every connection of the pool.
#[test]
fn encoding_field_4() {
    readable_file("encoding_field:4");
}

#[test]
fn encoding_field_8() {
    readable_file("encoding_field:8");
}

/// A writer killed (SIGKILL) mid-transaction after its one-page cache spilled changed pages
/// into the database file, leaving a hot `-journal`. Every route must give the
/// pre-transaction content, which is what Python sees when it opens the file (rolling the
/// journal back); each route gets its own copy of the file and the hot journal.
#[test]
fn hot_journal_of_a_killed_writer() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hot.db");
    let out = py::run_unchecked(py::HOT_JOURNAL, &[file.to_str().unwrap()]);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the writer should have killed itself: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = dir.path().join("hot.db-journal");
    let journal_len = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    assert!(journal_len > 0, "no hot journal was left behind");
    let pre = dir.path().join("hot.db.pre");
    assert_ne!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&pre).unwrap(),
        "no changed page reached the database file, so the journal would not matter"
    );
    let pre_dump = py::dump(&pre);
    let pristine = Pristine::new(
        dir,
        "hot.db",
        &[
            "SELECT count(*) AS n FROM big",
            "SELECT count(*) AS n FROM big WHERE payload LIKE 'changed%'",
        ],
    );
    assert!(
        journal.exists(),
        "computing the expectation rolled back the original"
    );
    match &pristine.expect {
        Expect::Exact { dump, .. } => assert!(
            dump == &pre_dump,
            "Python's view after rollback is not the pre-transaction content"
        ),
        Expect::Accounts { .. } => unreachable!(),
    }
    println!("hot journal: {journal_len} bytes");
    let failures = run_all(
        "hot journal",
        &Route::all(false),
        Policy::Readable,
        Limits::default(),
        |dir| pristine.source(dir),
    );
    assert_none("hot journal", failures);
}

/// A fresh WAL file for one route: the Python writer keeps its connection open with every
/// commit still in `-wal` (`wal_autocheckpoint=0`) until the route is checked.
fn wal_source(dir: &Path) -> Source {
    let file = dir.join("wal.db");
    let mut writer = py::Live::spawn(py::WAL_HOLD, &[file.to_str().unwrap()], &dir.join("stop"));
    let ready = writer.wait_for("ready");
    let wal_bytes: u64 = ready
        .rsplit('=')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(wal_bytes > 0, "no frames in -wal: {ready}");
    let probes = ["SELECT count(*) AS n FROM items WHERE qty < 0"]
        .iter()
        .map(|sql| (sql.to_string(), py::scalar(&file, sql).parse().unwrap()))
        .collect();
    Source {
        expect: Expect::Exact {
            dump: py::dump(&file),
            probes,
        },
        path: file,
        _live: Some(writer),
    }
}

/// A WAL file with un-checkpointed frames whose writer still has it open.
#[test]
fn wal_with_open_writer_and_uncheckpointed_frames() {
    let failures = run_all(
        "WAL, writer open",
        &Route::all(false),
        Policy::Readable,
        Limits::default(),
        wal_source,
    );
    assert_none("WAL, writer open", failures);
}
