//! Making a source fit a destination that a page-for-page copy cannot take as it is.
//!
//! `sqlite3_backup` copies pages verbatim, so three differences need a conversion first:
//! - **encoding**: a connection fixes its text encoding once it has read a schema, so a UTF-16
//!   database copied under UTF-8 connections leaves all of them failing; the rows are copied
//!   one by one into a database that already has the destination's encoding;
//! - **page size**: SQLite refuses to change the page size of an in-memory or WAL database
//!   that holds pages; `VACUUM INTO` rewrites a file source with the destination's page size
//!   (it keeps an in-memory source's page size whatever it is asked, so those are copied row
//!   by row instead);
//! - **page 1's header**: page 1 of a WAL-mode file says "WAL", which makes memdb unreadable,
//!   and an encoding field SQLite never writes (4, read as UTF-8) fails every connection that
//!   already fixed its encoding. The crate's own memdb databases rewrite both as they write
//!   page 1 (`sqlite::memdb::vfs`); other destinations that would keep them get the copy through
//!   one of those first.
//!
//! Every decision comes from SQLite's own view of both databases (`PRAGMA`s), read by the
//! caller under the locks the copy then keeps. A conversion costs a second copy in memory
//! while it runs.

use std::ffi::CStr;
use std::path::Path;

use super::engine;
use super::options::BackupOptions;
use super::reencode;
use crate::error::{BackupError, SqliteFailure};
use crate::format::header;
use crate::sqlite::{memdb, DbRef, OwnedDb, Storage};
use crate::sqlite::{Budget, BudgetedBusyHandler};

/// What a source needs before it can be copied page for page into a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Direct,
    Reencode {
        page_size: i64,
        encoding: String,
    },
    Repage {
        page_size: i64,
    },
    /// Page 1's header needs the rewrite the crate's memdb makes (see the module's notes).
    FixHeader,
}

/// SQLite's view of one database.
struct Facts {
    page_size: i64,
    pages: i64,
    wal: bool,
    encoding: String,
    /// The header's encoding field says something else than the encoding SQLite read from it.
    odd_encoding_field: bool,
}

fn facts(db: &DbRef<'_>, schema: &CStr) -> Result<Facts, SqliteFailure> {
    let quoted = quote(schema);
    let mode = db.query_column(&format!("PRAGMA {quoted}.journal_mode"))?;
    let pages = db.query_i64(&format!("PRAGMA {quoted}.page_count"))?;
    // The connection's encoding: every schema of a connection shares it.
    let encoding = db
        .query_column("PRAGMA encoding")?
        .into_iter()
        .next()
        .unwrap_or_default();
    // A database without a file of its own (`:memory:`) was written by SQLite, in its encoding.
    let field = db
        .file_header(schema)
        .ok()
        .and_then(|(h, _)| header::field(&h, header::TEXT_ENCODING));
    Ok(Facts {
        page_size: db.query_i64(&format!("PRAGMA {quoted}.page_size"))?,
        pages,
        wal: mode.first().is_some_and(|m| m.eq_ignore_ascii_case("wal")),
        odd_encoding_field: pages > 0
            && field.is_some_and(|f| f != 0 && f != encoding_code(&encoding)),
        encoding,
    })
}

/// The header's code for an encoding `PRAGMA encoding` names.
fn encoding_code(name: &str) -> u32 {
    match name.to_ascii_lowercase().as_str() {
        "utf-16le" => 2,
        "utf-16be" => 3,
        _ => 1,
    }
}

/// `schema` as a quoted SQL identifier.
pub(crate) fn quote(schema: &CStr) -> String {
    format!("\"{}\"", schema.to_string_lossy().replace('"', "\"\""))
}

/// Decides how `src_schema` of `src` reaches `dst_schema` of `dst`.
pub(crate) fn plan(
    src: &DbRef<'_>,
    src_schema: &CStr,
    dst: &DbRef<'_>,
    dst_schema: &CStr,
) -> Result<Plan, SqliteFailure> {
    let (from, to) = (facts(src, src_schema)?, facts(dst, dst_schema)?);
    let storage = dst.storage(dst_schema);
    // An empty destination takes the source's page size; a non-empty in-memory or WAL one
    // keeps its own.
    let keeps_page_size = (storage != Storage::File || to.wal) && to.pages > 0;
    let page_size = if keeps_page_size {
        to.page_size
    } else {
        from.page_size
    };
    let repage = page_size != from.page_size;
    // VACUUM INTO ignores the requested page size when its source is in memory.
    let vacuum_can_repage = src.storage(src_schema) == Storage::File;
    let reencode = from.pages > 0 && from.encoding != to.encoding;
    Ok(if reencode || (repage && !vacuum_can_repage) {
        Plan::Reencode {
            page_size,
            encoding: to.encoding,
        }
    } else if repage {
        Plan::Repage { page_size }
    } else if (from.wal && storage == Storage::Memdb)
        || (from.odd_encoding_field && storage != Storage::PatchedMemdb)
    {
        Plan::FixHeader
    } else {
        Plan::Direct
    })
}

/// Carries out `plan`: `None` for a direct copy, else a private in-memory database holding the
/// converted source. For `Repage`, `src` must have no transaction open (VACUUM cannot run
/// inside one); `VACUUM INTO` reads one consistent state by itself.
pub(crate) fn stage(
    plan: &Plan,
    src: &DbRef<'_>,
    src_schema: &CStr,
    budget: &Budget,
    path: &Path,
) -> Result<Option<OwnedDb>, BackupError> {
    let sqlite = |failure| budget.failed(path, failure);
    if *plan == Plan::Direct {
        return Ok(None);
    }
    let uri = memdb::unique_uri("stage");
    let staged = memdb::open_keeper(&uri, None).map_err(sqlite)?;
    match plan {
        Plan::Direct => {}
        Plan::Reencode {
            page_size,
            encoding,
        } => {
            staged
                .db()
                .exec(&format!(
                    "PRAGMA page_size={page_size}; PRAGMA encoding='{encoding}';"
                ))
                .map_err(sqlite)?;
            reencode::copy_logically(src, src_schema, &staged.db()).map_err(sqlite)?;
        }
        Plan::Repage { page_size } => {
            let schema = quote(src_schema);
            let original = src
                .query_i64(&format!("PRAGMA {schema}.page_size"))
                .map_err(sqlite)?;
            let vacuum = src.exec(&format!(
                "PRAGMA {schema}.page_size={page_size}; VACUUM {schema} INTO '{uri}';"
            ));
            // The pragma also sets the size a later VACUUM of the source would use: undo it.
            let _ = src.exec(&format!("PRAGMA {schema}.page_size={original}"));
            vacuum.map_err(sqlite)?;
        }
        Plan::FixHeader => {
            let dst = staged.db();
            let mut whole = BackupOptions::default().pages_per_step(0);
            let (to, from) = ((&dst, c"main"), (src, src_schema));
            engine::copy_pages(to, from, &mut whole, budget, path, sqlite, || {})?;
        }
    }
    Ok(Some(staged))
}

/// One end of a copy: a connection's schema, and the path errors name it by.
pub(crate) struct End<'e, 'a> {
    pub(crate) db: &'e DbRef<'a>,
    pub(crate) schema: &'e CStr,
    pub(crate) path: &'e Path,
}

/// The copy every route into a database shares: both connections wait within `budget`, the
/// source is converted where the destination cannot take it page for page, then the engine's
/// loop and finish. `ours` says `src` holds a read transaction this call began, which is
/// ended before a `VACUUM INTO` conversion (VACUUM cannot run inside one). SQLite failures of
/// the backup object itself name `blame`. Returns the plan it carried out.
pub(crate) fn copy(
    src: End<'_, '_>,
    dst: End<'_, '_>,
    ours: bool,
    blame: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<Plan, BackupError> {
    let _src_waits = BudgetedBusyHandler::install(src.db, budget, src.path);
    let _dst_waits = BudgetedBusyHandler::install(dst.db, budget, dst.path);
    let plan = plan(src.db, src.schema, dst.db, dst.schema)
        .map_err(|failure| budget.failed(dst.path, failure))?;
    if ours && matches!(plan, Plan::Repage { .. }) {
        src.db
            .exec("COMMIT")
            .map_err(|failure| budget.failed(src.path, failure))?;
    }
    let staged = stage(&plan, src.db, src.schema, budget, src.path)?;
    let (from, from_schema) = match &staged {
        Some(stage) => (stage.db(), c"main"),
        None => (src.db.reborrow(), src.schema),
    };
    let sqlite = BackupError::sqlite_at(budget.op(), blame);
    // Declared before the backup, so restored after it is finished or rolled back.
    let _caches = (
        (ours || staged.is_some()).then(|| CopyCache::set(&from, from_schema)),
        (matches!(
            dst.db.storage(dst.schema),
            Storage::Memdb | Storage::PatchedMemdb
        ) && !journal_off(dst.db, dst.schema))
        .then(|| CopyCache::set(dst.db, dst.schema)),
    );
    let (to, from) = ((dst.db, dst.schema), (&from, from_schema));
    engine::copy_pages(to, from, opts, budget, dst.path, sqlite, || {})?;
    Ok(plan)
}

/// The page cache, in KiB, of each in-memory end while a copy runs. A backup touches every
/// page once, so a cache of SQLite's default 2 MiB only makes the copy cycle through more
/// buffers than the CPU caches hold; a small one keeps them hot. Not for a file destination,
/// where every cache spill may cost a journal sync.
const COPY_CACHE_KIB: i64 = 128;

/// True when `schema` runs without a rollback journal (`journal_mode=OFF`). Pages a small
/// cache spills into such a database before the commit could not be taken back by a
/// cancel or failure, so its cache is left as it is (a larger copy still spills: SQLite
/// itself cannot roll back without a journal, see the README's limits).
fn journal_off(db: &DbRef<'_>, schema: &CStr) -> bool {
    db.query_column(&format!("PRAGMA {}.journal_mode", quote(schema)))
        .map_or(true, |m| {
            m.first().is_some_and(|m| m.eq_ignore_ascii_case("off"))
        })
}

/// Sets one end's cache to [`COPY_CACHE_KIB`] and puts its own setting back on drop.
struct CopyCache<'e, 'a> {
    db: &'e DbRef<'a>,
    schema: String,
    before: Option<i64>,
}

impl<'e, 'a> CopyCache<'e, 'a> {
    fn set(db: &'e DbRef<'a>, schema: &CStr) -> Self {
        let schema = quote(schema);
        let before = db
            .query_i64(&format!("PRAGMA {schema}.cache_size"))
            .ok()
            .filter(|_| {
                let small = format!("PRAGMA {schema}.cache_size=-{COPY_CACHE_KIB}");
                db.exec(&small).is_ok()
            });
        CopyCache { db, schema, before }
    }
}

impl Drop for CopyCache<'_, '_> {
    fn drop(&mut self) {
        if let Some(before) = self.before {
            // The connection keeps working with any cache size, so a failure here (only a
            // lock wait past the budget could cause one) costs speed, never data.
            let _ = (self.db).exec(&format!("PRAGMA {}.cache_size={before}", self.schema));
        }
    }
}
