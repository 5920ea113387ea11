//! The 100-byte SQLite database header: checked before a restore reads a file, and after a
//! save wrote one. The one place that knows its byte offsets.

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

// Offsets of the header's big-endian 4-byte fields ("Database File Format", section 1.3).

/// The file change counter.
pub(crate) const CHANGE_COUNTER: usize = 24;
/// The database size in pages, valid only while [`VERSION_VALID_FOR`] equals the counter.
pub(crate) const PAGE_COUNT: usize = 28;
/// The schema cookie, which readers compare to know their parsed schema is current.
pub(crate) const SCHEMA_COOKIE: usize = 40;
/// The text encoding: 1 (UTF-8), 2 (UTF-16le) or 3 (UTF-16be), or 0 in a database that never
/// had a schema.
pub(crate) const TEXT_ENCODING: usize = 56;
/// The change counter when [`SQLITE_VERSION`] was stored.
pub(crate) const VERSION_VALID_FOR: usize = 92;
/// The `SQLITE_VERSION_NUMBER` of the library that last wrote the file.
pub(crate) const SQLITE_VERSION: usize = 96;
/// Bytes 18 and 19: the file format's write and read versions (1 rollback, 2 WAL).
const WRITE_VERSION: usize = 18;
const READ_VERSION: usize = 19;

/// The 4-byte field at `at`, if `bytes` holds it.
pub(crate) fn field(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*bytes.get(at..)?.first_chunk::<4>()?))
}

/// Sets the 4-byte field at `at` (which `bytes` must hold).
pub(crate) fn set_field(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Marks page 1 as written by a library of version `version`: the change counter and the
/// version-valid-for number (equal, so the page count stays valid), and the schema cookie.
pub(crate) fn stamp(page1: &mut [u8], counter: u32, schema_cookie: u32, version: u32) {
    set_field(page1, CHANGE_COUNTER, counter);
    set_field(page1, SCHEMA_COOKIE, schema_cookie);
    set_field(page1, VERSION_VALID_FOR, counter);
    set_field(page1, SQLITE_VERSION, version);
}

/// The page size the header states (bytes 16..18; 1 stands for 65536), unchecked.
pub(crate) fn page_size(bytes: &[u8; 100]) -> u32 {
    match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        n => u32::from(n),
    }
}

/// The file change counter.
pub(crate) fn change_counter(bytes: &[u8; 100]) -> u32 {
    field(bytes, CHANGE_COUNTER).expect("within 100 bytes")
}

/// The schema cookie.
pub(crate) fn schema_cookie(bytes: &[u8; 100]) -> u32 {
    field(bytes, SCHEMA_COOKIE).expect("within 100 bytes")
}

/// The header's read and write versions both say rollback journal (1), not WAL (2).
pub(crate) fn is_rollback_mode(bytes: &[u8; 100]) -> bool {
    bytes[WRITE_VERSION] == 1 && bytes[READ_VERSION] == 1
}

/// The parts of the 100-byte database header that can be checked before SQLite opens the file.
pub(crate) struct Header {
    pub(crate) page_size: u32,
    pub(crate) file_len: u64,
    /// The page count, when the header marks it valid (and the file is not in WAL mode).
    pub(crate) valid_pages: Option<u32>,
}

impl Header {
    /// Checks a header (read by SQLite's own file handle, `DbRef::file_header`, or from a
    /// file) against the length of the file it came from.
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
        let be32 = |at: usize| field(bytes, at).expect("within 100 bytes");
        let wal = says_wal(bytes);
        // The header's page count is authoritative only while it is marked valid.
        let (pages, change, valid_for) = (
            be32(PAGE_COUNT),
            be32(CHANGE_COUNTER),
            be32(VERSION_VALID_FOR),
        );
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
        let (write, read) = (bytes[WRITE_VERSION], bytes[READ_VERSION]);
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

const VERSION_BYTES: std::ops::Range<usize> = WRITE_VERSION..READ_VERSION + 1;

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

/// What SQLite reads from an encoding field it never writes (4, 8, 256, ...), if the image
/// has one. Opening a main database, SQLite takes the field's low two bits, 0 there meaning
/// UTF-8 (`sqlite3InitOne`), so every reader opens such a file; but a connection that already
/// fixed its encoding compares those bits with its own, and a 4 fails a UTF-8 connection
/// ("attached databases must use the same text encoding as main database").
pub(crate) fn encoding_as_read(image: &[u8]) -> Option<u32> {
    let field = field(image, TEXT_ENCODING)?;
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
        set_field(image, TEXT_ENCODING, encoding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_fields_read_back_and_keep_the_page_count_valid() {
        let mut bytes = [0u8; 100];
        bytes[..16].copy_from_slice(MAGIC);
        bytes[16..18].copy_from_slice(&4096u16.to_be_bytes());
        bytes[WRITE_VERSION] = 1;
        bytes[READ_VERSION] = 1;
        set_field(&mut bytes, PAGE_COUNT, 3);
        stamp(&mut bytes, 7, 9, 3_046_000);
        assert_eq!(change_counter(&bytes), 7);
        assert_eq!(schema_cookie(&bytes), 9);
        assert_eq!(field(&bytes, SQLITE_VERSION), Some(3_046_000));
        assert_eq!(field(&bytes[..27], CHANGE_COUNTER), None);
        let parsed = Header::parse(&bytes, 3 * 4096).unwrap();
        assert_eq!((parsed.page_size, parsed.valid_pages), (4096, Some(3)));
        assert!(is_rollback_mode(&bytes) && !says_wal(&bytes));
        bytes[READ_VERSION] = 2;
        assert!(says_wal(&bytes) && page1_needs_rewrite(&bytes));
        rewrite_page1(&mut bytes);
        assert!(is_rollback_mode(&bytes));
        set_field(&mut bytes, TEXT_ENCODING, 4);
        assert_eq!(encoding_as_read(&bytes), Some(1));
        rewrite_page1(&mut bytes);
        assert_eq!(field(&bytes, TEXT_ENCODING), Some(1));
    }
}
