//! The 100-byte SQLite database header: checked before a restore reads a file, and after a
//! save wrote one.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::error::{BackupError, Operation};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The page size the header states (bytes 16..18; 1 stands for 65536), unchecked.
pub(crate) fn page_size(bytes: &[u8; 100]) -> u32 {
    match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        n => u32::from(n),
    }
}

/// The file change counter (bytes 24..28).
pub(crate) fn change_counter(bytes: &[u8; 100]) -> u32 {
    u32::from_be_bytes([bytes[24], bytes[25], bytes[26], bytes[27]])
}

/// The schema cookie (bytes 40..44).
pub(crate) fn schema_cookie(bytes: &[u8; 100]) -> u32 {
    u32::from_be_bytes([bytes[40], bytes[41], bytes[42], bytes[43]])
}

/// The header's read and write versions both say rollback journal (1), not WAL (2).
pub(crate) fn is_rollback_mode(bytes: &[u8; 100]) -> bool {
    bytes[18] == 1 && bytes[19] == 1
}

/// The parts of the 100-byte database header that can be checked before SQLite opens the file.
pub(crate) struct Header {
    pub(crate) page_size: u32,
    pub(crate) file_len: u64,
    /// The page count, when the header marks it valid (and the file is not in WAL mode).
    pub(crate) valid_pages: Option<u32>,
}

impl Header {
    /// Reads and checks the header of the file at `path`. Only for files no SQLite connection
    /// of this process has open: closing the descriptor would drop their POSIX locks.
    pub(crate) fn read(path: &Path, op: Operation) -> Result<Header, BackupError> {
        let meta = fs::metadata(path).map_err(|e| BackupError::io(op, path, "open", e))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(BackupError::invalid_db(op, path, format!("it is {what}")));
        }
        let file_len = meta.len();
        let mut bytes = [0u8; 100];
        let mut file = fs::File::open(path).map_err(|e| BackupError::io(op, path, "open", e))?;
        if file_len < 100 || file.read_exact(&mut bytes).is_err() {
            return Err(BackupError::invalid_db(
                op,
                path,
                format!("only {file_len} bytes, shorter than a database header"),
            ));
        }
        Self::parse(&bytes, file_len).map_err(|reason| BackupError::invalid_db(op, path, reason))
    }

    /// Checks a header read by SQLite's own file handle (`DbRef::file_header`).
    pub(crate) fn parse(bytes: &[u8; 100], file_len: u64) -> Result<Header, String> {
        if &bytes[..16] != MAGIC {
            return Err("missing the \"SQLite format 3\" header".into());
        }
        if let Some(reason) = Self::unwritable(bytes) {
            return Err(reason);
        }
        let page_size = page_size(bytes);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("invalid page size {page_size} in header"));
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let wal = bytes[18] == 2 || bytes[19] == 2;
        // The header's page count is authoritative only while it is marked valid.
        let (pages, change, valid_for) = (be32(28), be32(24), be32(92));
        let valid_pages = (!wal && pages != 0 && change == valid_for).then_some(pages);
        // A longer file is legal (SQLITE_FCNTL_CHUNK_SIZE preallocates); a shorter one is cut.
        if let Some(pages) = valid_pages {
            let expected = u64::from(pages) * u64::from(page_size);
            if expected > file_len {
                return Err(format!(
                    "truncated: header says {pages} pages of {page_size} bytes ({expected} bytes) but the file holds {file_len} bytes"
                ));
            }
        }
        Ok(Header {
            page_size,
            file_len,
            valid_pages,
        })
    }

    /// Why a database with this header cannot become a writable copy: header bytes 18 and 19
    /// are the file format versions needed to write and to read it (1 rollback, 2 WAL).
    /// SQLite refuses to write a database that asks for a newer write version, so a copy of
    /// its pages would stay read-only for good.
    pub(crate) fn unwritable(bytes: &[u8; 100]) -> Option<String> {
        let (write, read) = (bytes[18], bytes[19]);
        if read > 2 {
            return Some(format!(
                "file format read version {read} is newer than SQLite reads"
            ));
        }
        (write > 2).then(|| {
            format!(
                "file format write version {write}: SQLite only reads such a database, so a \
                 copy of it could never be written"
            )
        })
    }

    /// True unless the header's valid page count disagrees with the file's length: what a
    /// freshly written file must satisfy exactly.
    pub(crate) fn matches_length(&self) -> bool {
        self.valid_pages
            .is_none_or(|pages| u64::from(pages) * u64::from(self.page_size) == self.file_len)
    }
}

/// Header bytes 18 and 19: the file format's write and read versions (2 means WAL).
const VERSION_BYTES: std::ops::Range<usize> = 18..20;

/// True when a database image's header marks it as a WAL database, which memdb cannot open.
pub(crate) fn says_wal(image: &[u8]) -> bool {
    image.get(VERSION_BYTES).is_some_and(|v| v.contains(&2))
}

/// Marks a database image as a rollback-journal database, the change `PRAGMA
/// journal_mode=DELETE` makes to a WAL file's header. Exact for an image that holds the
/// committed state (a serialized or backed-up database, WAL frames included).
pub(crate) fn mark_rollback(image: &mut [u8]) {
    if let Some(versions) = image.get_mut(VERSION_BYTES) {
        for byte in versions.iter_mut().filter(|b| **b == 2) {
            *byte = 1;
        }
    }
}

/// Header bytes 56..60: the text encoding, 1 (UTF-8), 2 (UTF-16le) or 3 (UTF-16be), or 0 in a
/// database that never had a schema.
const ENCODING_FIELD: std::ops::Range<usize> = 56..60;

/// What SQLite reads from an encoding field it never writes (4, 8, 256, ...), if the image
/// has one. Opening a main database, SQLite takes the field's low two bits, 0 there meaning
/// UTF-8 (`sqlite3InitOne`), so every reader opens such a file; but a connection that already
/// fixed its encoding compares those bits with its own, and a 4 fails a UTF-8 connection
/// ("attached databases must use the same text encoding as main database").
pub(crate) fn encoding_as_read(image: &[u8]) -> Option<u32> {
    let field = u32::from_be_bytes(image.get(ENCODING_FIELD)?.try_into().ok()?);
    match (field, field & 3) {
        (0..=3, _) => None,
        (_, 0) => Some(1),
        (_, low) => Some(low),
    }
}

/// True when page 1 in `image` says WAL or carries an encoding field SQLite never writes:
/// connections sharing a memdb database fail on either.
pub(crate) fn page1_needs_rewrite(image: &[u8]) -> bool {
    says_wal(image) || encoding_as_read(image).is_some()
}

/// Rewrites what [`page1_needs_rewrite`] finds to what SQLite itself makes of it: the
/// rollback-journal versions, and the encoding SQLite reads from the field.
pub(crate) fn rewrite_page1(image: &mut [u8]) {
    mark_rollback(image);
    if let Some(encoding) = encoding_as_read(image) {
        image[ENCODING_FIELD].copy_from_slice(&encoding.to_be_bytes());
    }
}
