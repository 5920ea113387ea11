//! A logical copy between two connections, so that the copy takes the destination's text
//! encoding. A page copy (backup API, `VACUUM INTO`) keeps the source's encoding and ATTACH
//! refuses mixed encodings, so converting a UTF-16 database means reading every row on one
//! connection and inserting it on another. This mirrors `sqlite3RunVacuum`, across two
//! connections instead of one with an attached database.

use std::ffi::{c_int, CStr, CString};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use crate::error::SqliteFailure;
use crate::raw::{failure_from_code, DbRef};

/// Copies everything in `src`'s schema `src_schema` into `dst`'s `main` database, row by row,
/// so that the copy takes `dst`'s text encoding. `dst` must be a private, empty database whose
/// page size and encoding the caller has already set (e.g. `PRAGMA page_size=..; PRAGMA
/// encoding='UTF-8'`). The caller holds a read transaction on `src`, so every row comes from
/// one consistent state. Runs in one transaction on `dst`: on error `dst` is left empty
/// (rolled back).
///
/// Refuses a `dst` with an open transaction or any schema object, a `dst` in defensive mode
/// (no `writable_schema`), and a rowid table whose rowid every alias hides.
// The caller (restore into a connection of another encoding) lands separately.
#[allow(dead_code)]
pub(crate) fn copy_logically(
    src: &DbRef<'_>,
    src_schema: &CStr,
    dst: &DbRef<'_>,
) -> Result<(), SqliteFailure> {
    if !dst.autocommit() {
        return Err(refused("the destination has an open transaction".into()));
    }
    if dst.query_i64("SELECT count(*) FROM main.sqlite_schema")? != 0 {
        return Err(refused("the destination database is not empty".into()));
    }
    let fk = dst.query_i64("PRAGMA foreign_keys")?;
    let checks = dst.query_i64("PRAGMA ignore_check_constraints")?;
    // Like VACUUM: no foreign-key or CHECK enforcement (the rows were valid in the source,
    // and a CHECK may call a function `dst` lacks), and a writable schema so that views,
    // triggers and virtual tables can go in as bare schema rows. These pragmas are no-ops
    // inside a transaction, hence before BEGIN.
    dst.exec(
        "PRAGMA foreign_keys=OFF; PRAGMA ignore_check_constraints=ON; PRAGMA writable_schema=ON",
    )?;
    let result = in_transaction(src, src_schema, dst);
    if result.is_err() && !dst.autocommit() {
        // Ignore a failing ROLLBACK: the copy's own error is the one to report.
        let _ = dst.exec("ROLLBACK");
    }
    // RESET also drops the connection's cached schema, whatever state it was left in.
    let restored = dst.exec(&format!(
        "PRAGMA writable_schema=RESET; PRAGMA foreign_keys={fk}; \
         PRAGMA ignore_check_constraints={checks};"
    ));
    result.and(restored)
}

fn in_transaction(
    src: &DbRef<'_>,
    src_schema: &CStr,
    dst: &DbRef<'_>,
) -> Result<(), SqliteFailure> {
    // SQLite ignores writable_schema=ON silently in defensive mode; the schema rows would then
    // be refused half-way, so refuse up front.
    if dst.query_i64("PRAGMA writable_schema")? != 1 {
        return Err(refused(
            "the destination refuses PRAGMA writable_schema (defensive mode?)".into(),
        ));
    }
    let raw_schema = src_schema.to_string_lossy();
    let s = ident(&raw_schema);
    dst.exec("BEGIN")?;
    // Deferred BEGIN has not touched the file yet: auto_vacuum can still be chosen, and the
    // page written for it belongs to this transaction.
    let auto_vacuum = src.query_i64(&format!("PRAGMA {s}.auto_vacuum"))?;
    dst.exec(&format!("PRAGMA auto_vacuum={auto_vacuum}"))?;

    // Ordinary tables, shadow tables of virtual tables and sqlite_stat* included. SQLite makes
    // sqlite_sequence itself for the first AUTOINCREMENT table.
    let tables = pairs(
        src,
        &format!(
            "SELECT name, sql FROM {s}.sqlite_schema WHERE type='table' \
             AND name<>'sqlite_sequence' AND coalesce(rootpage,1)>0 ORDER BY rowid"
        ),
    )?;
    for (_, sql) in &tables {
        dst.exec(sql)?;
    }
    for (name, _) in &tables {
        copy_table(src, &raw_schema, dst, name)?;
    }
    // Inserting explicit rowids into AUTOINCREMENT tables already filled sqlite_sequence with
    // the largest ones; the source's counters may be higher (deleted rows), so take its rows.
    // No dst sqlite_sequence means no AUTOINCREMENT table is left, and VACUUM drops it too.
    if dst.query_i64("SELECT count(*) FROM main.sqlite_schema WHERE name='sqlite_sequence'")? == 1 {
        dst.exec("DELETE FROM main.sqlite_sequence")?;
        copy_table(src, &raw_schema, dst, "sqlite_sequence")?;
    }
    // Indexes after the data: building them once is faster than updating them per row.
    // Autoindexes (NULL sql) came with their tables.
    let indexes = src.query_column(&format!(
        "SELECT sql FROM {s}.sqlite_schema WHERE type='index' AND sql IS NOT NULL ORDER BY rowid"
    ))?;
    for sql in &indexes {
        dst.exec(sql)?;
    }
    // Views, triggers and virtual tables own no storage: their schema rows are all there is.
    // Triggers arrive after the data, so none fired during the copy.
    copy_rows(
        src,
        &format!(
            "SELECT type, name, tbl_name, rootpage, sql FROM {s}.sqlite_schema \
             WHERE type IN ('view','trigger') OR (type='table' AND rootpage=0) ORDER BY rowid"
        ),
        dst,
        "INSERT INTO main.sqlite_schema(type, name, tbl_name, rootpage, sql) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    // Bare schema rows change neither the cookie nor the connection's parsed schema. Bump the
    // cookie (as VACUUM does) so other connections to `dst` re-read it, RESET so this one
    // does, and parse it now: a schema `dst` cannot load fails here, before COMMIT.
    let cookie = dst.query_i64("PRAGMA main.schema_version")?;
    dst.exec(&format!(
        "PRAGMA main.schema_version={}; PRAGMA writable_schema=RESET;",
        cookie + 1
    ))?;
    dst.query_i64("SELECT count(*) FROM main.sqlite_schema")?;

    for pragma in ["user_version", "application_id"] {
        let value = src.query_i64(&format!("PRAGMA {s}.{pragma}"))?;
        dst.exec(&format!("PRAGMA main.{pragma}={value}"))?;
    }
    dst.exec("COMMIT")
}

/// Copies one table's stored columns, and its rowid when it has one.
fn copy_table(
    src: &DbRef<'_>,
    schema: &str,
    dst: &DbRef<'_>,
    table: &str,
) -> Result<(), SqliteFailure> {
    let (t, s) = (literal(table), literal(schema));
    // `hidden` 2 and 3 are generated columns: `dst` computes them again.
    let columns = pairs(
        src,
        &format!("SELECT hidden, name FROM pragma_table_xinfo({t}, {s}) ORDER BY cid"),
    )?;
    let without_rowid = src.query_i64(&format!(
        "SELECT wr FROM pragma_table_list({t}) WHERE schema={s}"
    ))? != 0;
    let mut names = Vec::new();
    if !without_rowid {
        // Keep rowids: indexes, FTS doclists and application data refer to them. A column of
        // the same name hides an alias, so take the first free one.
        let free = ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|alias| !columns.iter().any(|(_, n)| n.eq_ignore_ascii_case(alias)));
        let Some(alias) = free else {
            return Err(refused(format!(
                "table {table} has columns named rowid, _rowid_ and oid, \
                 so its rowids cannot be read and kept"
            )));
        };
        // Bare, not quoted: a quoted "rowid" would read as a column name first.
        names.push(alias.to_string());
    }
    names.extend(
        columns
            .iter()
            .filter(|(hidden, _)| hidden != "2" && hidden != "3")
            .map(|(_, name)| ident(name)),
    );
    let list = names.join(", ");
    let params = vec!["?"; names.len()].join(", ");
    copy_rows(
        src,
        &format!("SELECT {list} FROM {}.{}", ident(schema), ident(table)),
        dst,
        &format!(
            "INSERT INTO main.{}({list}) VALUES ({params})",
            ident(table)
        ),
    )
}

/// Runs `select` on `src` and `insert` on `dst` once per row, binding the row's values.
fn copy_rows(
    src: &DbRef<'_>,
    select: &str,
    dst: &DbRef<'_>,
    insert: &str,
) -> Result<(), SqliteFailure> {
    let read = Stmt::prepare(src, select)?;
    let write = Stmt::prepare(dst, insert)?;
    // SAFETY: both statements are live (owned by the guards) for these pure reads.
    let (n, params) = unsafe {
        (
            ffi::sqlite3_column_count(read.ptr()),
            ffi::sqlite3_bind_parameter_count(write.ptr()),
        )
    };
    if n != params {
        return Err(failure_from_code(ffi::SQLITE_MISUSE));
    }
    while read.step()? {
        for i in 0..n {
            // SAFETY: a row is current on `read`, so column `i` (< n) has a value, valid until
            // `read` steps again. `write` is a live statement and `i + 1` a valid parameter.
            // sqlite3_bind_value accepts the unprotected value and copies it, converting text
            // to `dst`'s encoding. The two connections are used from this thread only
            // (DbRef is not Send), so nothing touches `src` while `dst` reads the value.
            let rc = unsafe {
                ffi::sqlite3_bind_value(
                    write.ptr(),
                    i + 1,
                    ffi::sqlite3_column_value(read.ptr(), i),
                )
            };
            if rc != ffi::SQLITE_OK {
                return Err(dst.failure(rc));
            }
        }
        write.step()?;
        // SAFETY: resetting a live statement; its error, if any, was just reported by step.
        unsafe { ffi::sqlite3_reset(write.ptr()) };
    }
    Ok(())
}

/// Every row's first two columns as text, NULL as "".
fn pairs(db: &DbRef<'_>, sql: &str) -> Result<Vec<(String, String)>, SqliteFailure> {
    let stmt = Stmt::prepare(db, sql)?;
    let mut rows = Vec::new();
    while stmt.step()? {
        rows.push((stmt.text(0), stmt.text(1)));
    }
    Ok(rows)
}

/// A statement this module prepared, finalized exactly once, on drop.
struct Stmt<'d> {
    ptr: NonNull<ffi::sqlite3_stmt>,
    db: &'d DbRef<'d>,
}

impl<'d> Stmt<'d> {
    fn prepare(db: &'d DbRef<'d>, sql: &str) -> Result<Self, SqliteFailure> {
        let sql = CString::new(sql).map_err(|_| failure_from_code(ffi::SQLITE_MISUSE))?;
        let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
        // SAFETY: open handle (DbRef invariant), NUL-terminated SQL, out-pointer to a local.
        // On error SQLite leaves `stmt` NULL, so nothing needs finalizing.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db.as_ptr(), sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(db.failure(rc));
        }
        // NULL with SQLITE_OK means the text held no statement: a bug in this module.
        let ptr = NonNull::new(stmt).ok_or_else(|| failure_from_code(ffi::SQLITE_MISUSE))?;
        Ok(Stmt { ptr, db })
    }

    fn ptr(&self) -> *mut ffi::sqlite3_stmt {
        self.ptr.as_ptr()
    }

    /// True when a row is ready, false when the statement is done.
    fn step(&self) -> Result<bool, SqliteFailure> {
        // SAFETY: a live statement of `self.db`, used on this thread only.
        match unsafe { ffi::sqlite3_step(self.ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(self.db.failure(rc)),
        }
    }

    /// Column `i` of the current row as UTF-8 text, NULL as "".
    fn text(&self, i: c_int) -> String {
        // SAFETY: a row is current (callers only read after step returned true) and `i` is
        // within the statement's columns; the text stays valid until the next step, and we
        // copy it at once.
        unsafe {
            let p = ffi::sqlite3_column_text(self.ptr(), i);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p.cast()).to_string_lossy().into_owned()
            }
        }
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: we prepared this statement and drop runs once; the connection outlives
        // the guard through its borrow.
        unsafe { ffi::sqlite3_finalize(self.ptr()) };
    }
}

/// An identifier in double quotes, inner quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal in single quotes, inner quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn refused(message: String) -> SqliteFailure {
    SqliteFailure {
        code: ffi::SQLITE_ERROR,
        extended_code: ffi::SQLITE_ERROR,
        message: format!("cannot re-encode: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::c_void;

    use super::*;
    use crate::raw::{memdb, OwnedDb};

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
        same(
            &src,
            &dst,
            &[
                "SELECT type || name || tbl_name || sql FROM sqlite_schema ORDER BY name",
                "SELECT quote(rowid) || label || len || up FROM child",
                "SELECT k || v FROM kv",
                "SELECT label || name FROM labels ORDER BY 1",
                "SELECT tbl || idx || stat FROM sqlite_stat1 ORDER BY 1",
                "SELECT count(*) FROM sqlite_stat4",
            ],
        );
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
}
