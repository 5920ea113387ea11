//! Every call of the replica into the rest of the crate: the private connection, the
//! header look, the write record, the consistent read, and the restore of a rebuilt image.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diesel::SqliteConnection;

use super::format;
pub(crate) use crate::autosave::schedule::{Schedule, Watch};
use crate::autosave::{open_private, worker};
use crate::copy::{checks::begin_read, BackupOptions};
use crate::error::{BackupError, Operation};
use crate::pool::{MemoryDatabase, SingletonManager};
use crate::sqlite::memdb::{self, record::Tracker};
use crate::sqlite::OwnedDb;

const OP: Operation = Operation::Replica;

/// What the last upload held, for the next one to send only what changed since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Uploaded {
    /// The write record's mark at that upload's read.
    pub(crate) mark: u64,
    pub(crate) page_size: u32,
    pub(crate) pages: u32,
}

/// One consistent read of the database: the pages a sync sends.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) page_size: u32,
    pub(crate) pages: u32,
    /// Page numbers, ascending; every page when `full`.
    pub(crate) numbers: Vec<u32>,
    /// The object being built: their content, one page after another, from
    /// [`format::pages_at`] on, after room for the header and the page numbers.
    pub(crate) object: Vec<u8>,
    /// The record could not prove what changed, or a whole image was asked for.
    pub(crate) full: bool,
    /// With a whole image asked for: the pages that changed since the last upload, when
    /// the record can prove them (a delta can be cut from the image).
    pub(crate) changed: Option<Vec<u32>>,
    pub(crate) mark: u64,
    pub(crate) time: std::time::SystemTime,
    /// The database header (zeros when empty) as read.
    pub(crate) header: [u8; 100],
}

/// The replica's private connection to the pool's database, and its write record.
pub(crate) struct Source {
    db: OwnedDb,
    tracker: Option<Arc<Tracker>>,
}

impl Source {
    /// Finds the pool's database through one borrowed connection and opens our own.
    pub(crate) fn open(pool: &r2d2::Pool<SingletonManager>) -> Result<Source, BackupError> {
        let mut conn = pool.get().map_err(|e| BackupError::init(OP, e))?;
        Self::beside(&mut conn)
    }

    /// [`Self::open`] for a [`MemoryDatabase`].
    pub(crate) fn open_database(database: &MemoryDatabase) -> Result<Source, BackupError> {
        let mut conn = database.connect().map_err(|e| BackupError::init(OP, e))?;
        Self::beside(&mut conn)
    }

    /// Our own connection to the database `conn` uses.
    fn beside(conn: &mut SqliteConnection) -> Result<Source, BackupError> {
        let db = open_private(conn)?;
        let tracker = memdb::tracker_of(&db.db(), c"main");
        Ok(Source { db, tracker })
    }

    /// The database header: it changes with every commit (see `autosave::worker::header`).
    pub(crate) fn header(&self) -> Option<[u8; 100]> {
        worker::header(&self.db)
    }

    /// Reads under one read transaction (writers wait only for the copy) the pages that
    /// changed since `last`, or every page when the record cannot prove that, or when
    /// `whole` asks for an image.
    pub(crate) fn read(
        &self,
        last: Option<Uploaded>,
        whole: bool,
        timeout: Duration,
    ) -> Result<Read, BackupError> {
        let db = self.db.db();
        let label = db.display_path(c"main");
        let budget = BackupOptions::default().timeout(timeout).budget(OP);
        let sqlite = |failure| BackupError::Sqlite {
            op: OP,
            path: label.clone(),
            failure,
        };
        let mut data = touched(self.estimate(last, whole));
        begin_read(&db, &label, &budget).map_err(|f| budget.failed(&label, f))?;
        let read = (|| {
            let page_size = db.query_i64("PRAGMA main.page_size").map_err(sqlite)? as u32;
            let len = db.file_len(c"main").map_err(sqlite)?;
            let ps = u64::from(page_size);
            if len % ps != 0 || len / ps > u64::from(u32::MAX) {
                return Err(BackupError::invalid_db(
                    OP,
                    &label,
                    format!("its size {len} is not a whole number of {page_size}-byte pages"),
                ));
            }
            let pages = (len / ps) as u32;
            let time = std::time::SystemTime::now();
            let written = self
                .tracker
                .as_ref()
                .map(|t| t.written_since(last.map(|l| l.mark)));
            let mut page1 = [0u8; 100];
            if pages > 0 {
                db.read_at(c"main", 0, &mut page1).map_err(sqlite)?;
            }
            let counter = u32::from_be_bytes([page1[24], page1[25], page1[26], page1[27]]);
            // Proven only when the record saw every commit (its last counter is page 1's)
            // and the page size is the last upload's.
            let changed = match (&written, last) {
                (Some(w), Some(l))
                    if l.page_size == page_size
                        && (w.page_size == 0 || w.page_size == page_size)
                        && (pages == 0 || w.counter == Some(counter)) =>
                {
                    w.pages.clone().map(|dirty| {
                        let mut numbers: Vec<u32> =
                            dirty.into_iter().filter(|&p| p <= pages).collect();
                        numbers.extend((l.pages + 1).max(1)..=pages);
                        if pages > 0 {
                            numbers.push(1); // its change counter always moves
                        }
                        numbers.sort_unstable();
                        numbers.dedup();
                        numbers
                    })
                }
                _ => None,
            };
            let mark = written.map_or(0, |w| w.mark);
            // Most pages changed: a whole image costs the same, and starts a new chain.
            let changed = changed.filter(|c| c.len() as u64 * 2 <= u64::from(pages));
            let full = whole || changed.is_none();
            let numbers: Vec<u32> = if full {
                (1..=pages).collect()
            } else {
                changed.clone().unwrap_or_default()
            };
            let pages_at = format::pages_at(numbers.len());
            data.resize(pages_at + numbers.len() * ps as usize, 0);
            let into = &mut data[pages_at..];
            if full {
                db.read_at(c"main", 0, into).map_err(sqlite)?;
            } else {
                for (i, &p) in numbers.iter().enumerate() {
                    let at = i * ps as usize;
                    let page = &mut into[at..at + ps as usize];
                    db.read_at(c"main", u64::from(p - 1) * ps, page)
                        .map_err(sqlite)?;
                }
            }
            Ok(Read {
                page_size,
                pages,
                numbers,
                object: data,
                full,
                changed: if full { changed } else { None },
                mark,
                time,
                header: page1,
            })
        })();
        let _ = db.exec("COMMIT");
        read
    }
}

impl Source {
    /// About how many bytes the next read copies, asked before its read lock.
    fn estimate(&self, last: Option<Uploaded>, whole: bool) -> usize {
        let len = self.db.db().file_len(c"main").unwrap_or(0) as usize;
        match (&self.tracker, last) {
            (Some(t), Some(l)) if !whole => {
                let changed = t.written_since(Some(l.mark)).pages;
                let ps = l.page_size as usize;
                changed.map_or(len, |p| ((p.len() + 1) * ps).min(len))
            }
            _ => len,
        }
    }
}

/// A buffer for about `bytes`, plus a margin for commits landing before the read lock and
/// for the object's header and page numbers, with every memory page of it written once:
/// faulting a fresh allocation in during the copy would hold the read lock (which writers
/// wait for) twice as long (as `memdb::save` found). One byte per memory page faults it in
/// without a pass over the whole buffer.
fn touched(bytes: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; bytes + bytes / 8 + (64 << 10)];
    for at in (0..buffer.len()).step_by(4096) {
        // Not 0: a store of zero into calloc'd memory may be optimised away.
        buffer[at] = 1;
    }
    buffer
}

impl Read {
    /// The pages read, one after another.
    pub(crate) fn pages(&self) -> &[u8] {
        &self.object[format::pages_at(self.numbers.len())..]
    }
}

/// Replaces the database of `conn` with `image`, with every guarantee of
/// `restore_from_bytes` and an integrity check before anything is replaced.
pub(crate) fn restore_image(conn: &mut SqliteConnection, image: &[u8]) -> Result<(), BackupError> {
    // Every byte was checked against the objects' CRCs and structure (docs/replica.md).
    let mut options = BackupOptions::default();
    crate::snapshot::restore_from_bytes(conn, image, &mut options)
}

/// A label for errors about a store object.
pub(crate) fn object_label(location: &object_store::path::Path) -> PathBuf {
    PathBuf::from(location.as_ref())
}
