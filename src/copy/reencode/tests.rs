//! Tests of the logical copy: encodings, rowids, schema objects, virtual tables.
use std::ffi::c_void;

use super::*;
use crate::sqlite::{memdb, OwnedDb};

const RW: c_int = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_URI;

/// A test connection. `OwnedDb`'s close finalizes every statement of the connection,
/// including those FTS3/4, FTS5 and R*Tree keep inside connected virtual tables, which
/// then finalize them again (double free). Resetting the schema first disconnects them.
struct Db(OwnedDb);

impl std::ops::Deref for Db {
    type Target = OwnedDb;
    fn deref(&self) -> &OwnedDb {
        &self.0
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.0.db().exec("PRAGMA writable_schema=RESET");
    }
}

/// A private in-memory source in `encoding` (e.g. "UTF-16le"), after `setup`.
fn source(encoding: &str, setup: &str) -> Db {
    let db = Db(OwnedDb::open(c":memory:", RW).unwrap());
    run(&db, &format!("PRAGMA encoding='{encoding}'; {setup}"));
    assert_eq!(text(&db, "PRAGMA encoding"), [encoding]);
    db
}

/// A private named memdb destination, page size 8192 and UTF-8, and its URI.
fn dest() -> (Db, String) {
    let uri = memdb::unique_uri("reencode");
    let db = Db(memdb::open_keeper(&uri, None).unwrap());
    run(&db, "PRAGMA page_size=8192; PRAGMA encoding='UTF-8';");
    (db, uri)
}

/// Copies under a read transaction on the source, as the caller does.
fn copy(src: &OwnedDb, schema: &CStr, dst: &OwnedDb) -> Result<(), SqliteFailure> {
    run(src, "BEGIN; SELECT count(*) FROM sqlite_schema;");
    let result = copy_logically(&src.db(), schema, &dst.db());
    run(src, "COMMIT");
    result
}

fn run(db: &OwnedDb, sql: &str) {
    db.db().exec(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn text(db: &OwnedDb, sql: &str) -> Vec<String> {
    db.db().query_column(sql).unwrap()
}

fn int(db: &OwnedDb, sql: &str) -> i64 {
    db.db().query_i64(sql).unwrap()
}

/// Each query gives the same rows on both sides, and at least one; the last query's rows.
fn same(src: &OwnedDb, dst: &OwnedDb, queries: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in queries {
        rows = text(src, sql);
        assert!(!rows.is_empty(), "{sql}");
        assert_eq!(rows, text(dst, sql), "{sql}");
    }
    rows
}

fn assert_ok_utf8(dst: &OwnedDb) {
    assert_eq!(text(dst, "PRAGMA encoding"), ["UTF-8"]);
    assert_eq!(text(dst, "PRAGMA integrity_check"), ["ok"]);
    assert_eq!(int(dst, "PRAGMA writable_schema"), 0);
}

fn assert_empty(dst: &OwnedDb) {
    assert_eq!(int(dst, "SELECT count(*) FROM sqlite_schema"), 0);
    assert!(dst.db().autocommit());
    assert_eq!(int(dst, "PRAGMA writable_schema"), 0);
}

const DATA: &str = "
    CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB, r REAL, big INTEGER, n);
    INSERT INTO t(name, data, r, big, n) VALUES
        ('héllo wörld ✓ 日本語 🎉', x'00ff10', 3.141592653589793, 9223372036854775807, NULL);
    WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500)
    INSERT INTO t(name, data, r, big, n)
        SELECT 'ünï ' || i, randomblob(i % 40), i * 0.25, -9223372036854775808 + i,
               CASE WHEN i % 3 THEN NULL ELSE i END FROM c;
    DELETE FROM t WHERE id % 7 = 0;
    CREATE TABLE plain(a TEXT, b);
    INSERT INTO plain VALUES ('Ωmega', 1), ('ß', x''), ('', 2.5), (NULL, 1e300);
    DELETE FROM plain WHERE b = 1;
    INSERT INTO plain VALUES ('after the gap', -1);
    CREATE TABLE \"odd \"\"name\"\" ü\"(\"col \"\"q\"\"\" TEXT, rowid TEXT);
    INSERT INTO \"odd \"\"name\"\" ü\" VALUES ('ç''a', 'not the rowid'), ('x', 'y');
    DELETE FROM \"odd \"\"name\"\" ü\" WHERE _rowid_ = 1;";

#[test]
fn utf16_rows_and_rowids_arrive_identical_in_utf8() {
    for encoding in ["UTF-16le", "UTF-16be"] {
        let src = source(encoding, DATA);
        let (dst, uri) = dest();
        copy(&src, c"main", &dst).unwrap();
        assert_ok_utf8(&dst);
        let t = "SELECT quote(rowid) || '|' || quote(name) || quote(data) || quote(r) \
                 || typeof(r) || quote(big) || quote(n) FROM t ORDER BY rowid";
        assert_eq!(same(&src, &dst, &[t]).len(), 501 - 71);
        let odd = "SELECT quote(_rowid_) || quote(\"col \"\"q\"\"\") || quote(rowid) \
                   FROM \"odd \"\"name\"\" ü\"";
        let plain = "SELECT quote(rowid) || quote(a) || quote(b) FROM plain";
        assert_eq!(same(&src, &dst, &[plain, odd]), ["2'x''y'"]);
        // Another connection to the same database reads it in UTF-8 too.
        let other = OwnedDb::open(&CString::new(uri).unwrap(), RW).unwrap();
        assert_eq!(text(&other, "PRAGMA encoding"), ["UTF-8"]);
        assert_eq!(int(&other, "SELECT count(*) FROM t"), 430);
    }
}

#[test]
fn schema_objects_keep_their_behaviour() {
    let src = source(
        "UTF-16le",
        "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT UNIQUE);
         CREATE TABLE child(id INTEGER PRIMARY KEY AUTOINCREMENT,
             parent INTEGER REFERENCES parent(id), label TEXT CHECK (label <> 'bad'),
             len INTEGER GENERATED ALWAYS AS (length(label)) STORED,
             up TEXT GENERATED ALWAYS AS (upper(label)) VIRTUAL);
         CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
         CREATE INDEX child_label ON child(label);
         CREATE UNIQUE INDEX kv_v ON kv(v);
         CREATE VIEW labels AS SELECT c.label, p.name FROM child c JOIN parent p ON p.id = c.parent;
         CREATE TABLE log(msg TEXT);
         CREATE TRIGGER child_ins AFTER INSERT ON child BEGIN
             INSERT INTO log VALUES ('added ' || new.label); END;
         INSERT INTO parent VALUES (1, 'één'), (2, 'twee');
         INSERT INTO child(parent, label) VALUES (1, 'a'), (2, 'bé'), (1, 'c');
         DELETE FROM child WHERE label = 'c';
         INSERT INTO kv VALUES ('x', 1), ('ÿ', 2);
         ANALYZE;",
    );
    let (dst, _uri) = dest();
    run(&dst, "PRAGMA foreign_keys=ON");
    copy(&src, c"main", &dst).unwrap();
    assert_ok_utf8(&dst);
    let mut queries = vec![
        "SELECT type || name || tbl_name || sql FROM sqlite_schema ORDER BY name",
        "SELECT quote(rowid) || label || len || up FROM child",
        "SELECT k || v FROM kv",
        "SELECT label || name FROM labels ORDER BY 1",
        "SELECT tbl || idx || stat FROM sqlite_stat1 ORDER BY 1",
    ];
    // ANALYZE writes sqlite_stat4 only where SQLite was built with SQLITE_ENABLE_STAT4: the
    // bundled build is, Debian's system library is not.
    let stat4 = "SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat4'";
    if cfg!(feature = "bundled") || int(&src, stat4) == 1 {
        queries.push("SELECT count(*) FROM sqlite_stat4");
    }
    same(&src, &dst, &queries);
    let seq = same(&src, &dst, &["SELECT name || seq FROM sqlite_sequence"]);
    assert_eq!(seq, ["child3"]);
    // The trigger did not fire during the copy, but fires now; AUTOINCREMENT goes on.
    assert_eq!(same(&src, &dst, &["SELECT msg FROM log"]).len(), 3);
    run(&dst, "INSERT INTO child(parent, label) VALUES (2, 'd')");
    assert_eq!(
        text(&dst, "SELECT msg FROM log WHERE rowid = 4"),
        ["added d"]
    );
    assert_eq!(
        text(&dst, "SELECT id || up FROM child WHERE label = 'd'"),
        ["4D"]
    );
    // Constraints hold again: the caller's foreign_keys=ON is back, CHECK is enforced.
    assert_eq!(int(&dst, "PRAGMA foreign_keys"), 1);
    for refused in [
        "INSERT INTO child(parent, label) VALUES (99, 'e')",
        "INSERT INTO child(parent, label) VALUES (1, 'bad')",
        "INSERT INTO kv VALUES ('z', 1)",
    ] {
        assert!(dst.db().exec(refused).is_err(), "{refused}");
    }
}

/// Creates a virtual table on `src` and fills it, or says why the build cannot.
fn virtual_table(src: &OwnedDb, create: &str, fill: &str) -> bool {
    match src.db().exec(create) {
        Err(e) if e.message.contains("no such module") => {
            eprintln!("skipping `{create}`: {}", e.message);
            false
        }
        done => {
            done.unwrap();
            run(src, fill);
            true
        }
    }
}

#[test]
fn virtual_tables_come_with_their_shadow_tables() {
    let src = source("UTF-16be", "");
    let words = "VALUES (10, 'the quick brown fox'), (20, 'naïve café word'), \
                 (30, 'another word'), (40, 'nothing here')";
    let fts5 = virtual_table(
        &src,
        "CREATE VIRTUAL TABLE f USING fts5(body)",
        &format!("INSERT INTO f(rowid, body) {words}; DELETE FROM f WHERE rowid = 40;"),
    );
    let fts4 = virtual_table(
        &src,
        "CREATE VIRTUAL TABLE g USING fts4(body)",
        &format!("INSERT INTO g(docid, body) {words}"),
    );
    let rtree = virtual_table(
        &src,
        "CREATE VIRTUAL TABLE r USING rtree(id, x0, x1, y0, y1)",
        "INSERT INTO r VALUES (1, 0, 1, 0, 1), (2, 5, 6, 5, 6), (7, 0.5, 9, 0.5, 9)",
    );
    let (dst, _uri) = dest();
    copy(&src, c"main", &dst).unwrap();
    assert_ok_utf8(&dst);
    same(
        &src,
        &dst,
        &["SELECT type || name || sql FROM sqlite_schema ORDER BY name"],
    );
    if fts5 {
        let q = "SELECT rowid FROM f WHERE f MATCH 'word' ORDER BY rowid";
        assert_eq!(same(&src, &dst, &[q]), ["20", "30"]);
        same(&src, &dst, &["SELECT rowid FROM f WHERE f MATCH 'café'"]);
        run(&dst, "INSERT INTO f(f) VALUES ('integrity-check')");
        run(&dst, "INSERT INTO f VALUES ('word again')");
        assert_eq!(int(&dst, "SELECT count(*) FROM f WHERE f MATCH 'word'"), 3);
    }
    if fts4 {
        let q = "SELECT docid FROM g WHERE g MATCH 'word' ORDER BY docid";
        assert_eq!(same(&src, &dst, &[q]), ["20", "30"]);
        run(&dst, "INSERT INTO g(g) VALUES ('integrity-check')");
    }
    if rtree {
        same(
            &src,
            &dst,
            &["SELECT id FROM r WHERE x0 >= 0 AND x1 <= 6 ORDER BY id"],
        );
        assert_eq!(text(&dst, "SELECT rtreecheck('r')"), ["ok"]);
    }
}

#[test]
fn header_values_copied_and_page_size_kept() {
    let src = source(
        "UTF-16le",
        "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA user_version=42;
         PRAGMA application_id=1718186355; CREATE TABLE t(x); INSERT INTO t VALUES ('y');",
    );
    let (dst, _uri) = dest();
    copy(&src, c"main", &dst).unwrap();
    assert_ok_utf8(&dst);
    same(
        &src,
        &dst,
        &["PRAGMA user_version", "PRAGMA application_id"],
    );
    assert_eq!(same(&src, &dst, &["PRAGMA auto_vacuum"]), ["2"]);
    assert_eq!(int(&src, "PRAGMA page_size"), 4096);
    assert_eq!(int(&dst, "PRAGMA page_size"), 8192);
}

#[test]
fn attached_source_schema_with_odd_name() {
    let src = source(
        "UTF-16le",
        "ATTACH ':memory:' AS 'we\"ird''s';
         CREATE TABLE \"we\"\"ird's\".t(x); INSERT INTO \"we\"\"ird's\".t VALUES ('ok');",
    );
    let (dst, _uri) = dest();
    copy(&src, c"we\"ird's", &dst).unwrap();
    assert_ok_utf8(&dst);
    assert_eq!(text(&dst, "SELECT x FROM t"), ["ok"]);
}

/// A view alone bumps no cookie by itself: a connection that read the empty schema
/// before the copy must still see it afterwards.
#[test]
fn a_connection_open_before_the_copy_sees_the_new_schema() {
    let src = source("UTF-16le", "CREATE VIEW v AS SELECT 'é' AS x;");
    let (dst, uri) = dest();
    let other = OwnedDb::open(&CString::new(uri).unwrap(), RW).unwrap();
    assert_eq!(int(&other, "SELECT count(*) FROM sqlite_schema"), 0);
    copy(&src, c"main", &dst).unwrap();
    assert_ok_utf8(&dst);
    assert_eq!(text(&dst, "SELECT x FROM v"), ["é"]);
    assert_eq!(text(&other, "SELECT x FROM v"), ["é"]);
}

/// Orders by reversed bytes; registered on the source only.
unsafe extern "C" fn reversed(
    _: *mut c_void,
    a_len: c_int,
    a: *const c_void,
    b_len: c_int,
    b: *const c_void,
) -> c_int {
    // SAFETY: SQLite passes `a_len` and `b_len` readable bytes at `a` and `b`.
    let bytes = |p: *const c_void, n: c_int| unsafe {
        if n <= 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(p.cast::<u8>(), n as usize)
        }
    };
    bytes(b, b_len).cmp(bytes(a, a_len)) as c_int
}

#[test]
fn unknown_collation_fails_and_leaves_destination_empty() {
    let src = source("UTF-16le", DATA);
    // SAFETY: an open handle, a NUL-terminated name, no user data and a comparison
    // function that only reads the bytes SQLite passes it.
    let rc = unsafe {
        ffi::sqlite3_create_collation_v2(
            src.db().as_ptr(),
            c"reversed".as_ptr(),
            ffi::SQLITE_UTF8,
            ptr::null_mut(),
            Some(reversed),
            None,
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    run(
        &src,
        "CREATE TABLE z(s TEXT COLLATE reversed); INSERT INTO z VALUES ('a');",
    );
    let (dst, _uri) = dest();
    let err = copy(&src, c"main", &dst).unwrap_err();
    assert!(
        err.message.contains("no such collation sequence: reversed"),
        "{err}"
    );
    assert_empty(&dst);
    // The destination stays usable: the same copy without that table goes through.
    run(&src, "DROP TABLE z");
    copy(&src, c"main", &dst).unwrap();
    assert_ok_utf8(&dst);
    same(&src, &dst, &["SELECT quote(rowid) || quote(name) FROM t"]);
}

#[test]
fn unreachable_rowid_is_refused_not_renumbered() {
    let src = source(
        "UTF-16le",
        "CREATE TABLE ok(x); INSERT INTO ok VALUES (1);
         CREATE TABLE r(ROWID, _Rowid_, oid); INSERT INTO r VALUES (1, 2, 3);",
    );
    let (dst, _uri) = dest();
    let err = copy(&src, c"main", &dst).unwrap_err();
    assert!(
        err.message.contains("table r has columns named rowid"),
        "{err}"
    );
    assert_empty(&dst);
}

#[test]
fn busy_defensive_or_non_empty_destination_is_refused() {
    let src = source("UTF-16le", "CREATE TABLE t(x)");
    let (dst, _uri) = dest();
    run(&dst, "BEGIN");
    let err = copy(&src, c"main", &dst).unwrap_err();
    assert!(err.message.contains("open transaction"), "{err}");
    run(&dst, "COMMIT");
    let mut was = 0;
    // SAFETY: an open handle; SQLITE_DBCONFIG_DEFENSIVE takes an int and an int* that
    // points at a live local.
    unsafe {
        let on = ffi::SQLITE_DBCONFIG_DEFENSIVE;
        ffi::sqlite3_db_config(dst.db().as_ptr(), on, 1 as c_int, &mut was as *mut c_int);
    }
    let err = copy(&src, c"main", &dst).unwrap_err();
    assert!(err.message.contains("writable_schema"), "{err}");
    assert_empty(&dst);
    run(&dst, "CREATE TABLE mine(y);");
    let err = copy(&src, c"main", &dst).unwrap_err();
    assert!(err.message.contains("not empty"), "{err}");
    assert_eq!(text(&dst, "SELECT name FROM sqlite_schema"), ["mine"]);
}
