//! A logical copy between two connections, so that the copy takes the destination's text
//! encoding. A page copy (backup API, `VACUUM INTO`) keeps the source's encoding and ATTACH
//! refuses mixed encodings, so converting a UTF-16 database means reading every row on one
//! connection and inserting it on another. This mirrors `sqlite3RunVacuum`, across two
//! connections instead of one with an attached database.

use std::ffi::{c_int, CStr, CString};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use crate::error::SqliteFailure;
use crate::sqlite::{failure_from_code, DbRef};

/// Copies everything in `src`'s schema `src_schema` into `dst`'s `main` database, row by row,
/// so that the copy takes `dst`'s text encoding. `dst` must be a private, empty database whose
/// page size and encoding the caller has already set (e.g. `PRAGMA page_size=..; PRAGMA
/// encoding='UTF-8'`). The caller holds a read transaction on `src`, so every row comes from
/// one consistent state. Runs in one transaction on `dst`: on error `dst` is left empty
/// (rolled back).
///
/// Refuses a `dst` with an open transaction or any schema object, a `dst` in defensive mode
/// (no `writable_schema`), and a rowid table whose rowid every alias hides.
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

/// True when `db` is in defensive mode (`SQLITE_DBCONFIG_DEFENSIVE`).
fn defensive(db: &DbRef<'_>) -> bool {
    let mut on: c_int = 0;
    // SAFETY: an open handle (DbRef's invariant); with -1 SQLite only reads the setting and
    // writes it to the int* we pass, which points at a live local.
    unsafe {
        ffi::sqlite3_db_config(
            db.as_ptr(),
            ffi::SQLITE_DBCONFIG_DEFENSIVE,
            -1 as c_int,
            &mut on as *mut c_int,
        )
    };
    on != 0
}

fn in_transaction(
    src: &DbRef<'_>,
    src_schema: &CStr,
    dst: &DbRef<'_>,
) -> Result<(), SqliteFailure> {
    // In defensive mode the schema rows would be refused half-way, so refuse up front. Newer
    // SQLite ignores writable_schema=ON there; older versions (3.40) report it on and refuse
    // the writes, hence the direct question too.
    if defensive(dst) || dst.query_i64("PRAGMA writable_schema")? != 1 {
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
mod tests;
