//! A rollback journal in SQLite's documented format
//! (<https://www.sqlite.org/fileformat2.html#rollbackjournal>), as its pager writes one in
//! `journal_mode=DELETE`: any SQLite that finds it beside the database after a crash ("hot":
//! it exists, its first byte is not zero, and nobody holds the database's RESERVED lock)
//! copies the original pages back and truncates the file to the original size.
//!
//! # The sync order (`syncJournal` in SQLite's `pager.c`, at `synchronous=FULL`)
//! 1. The header goes out with its magic and record count zeroed ([`Journal::start`]), then
//!    the records: until step 3 the journal is not hot, whatever part of it a power loss keeps.
//! 2. fsync the journal, then its directory (the unix VFS syncs the folder of a new journal
//!    on its first sync).
//! 3. Write the magic and the real record count over the first 12 bytes ([`seal`]).
//! 4. fsync the journal again. Only now may the database be written.
//!
//! Writing the real count at once and syncing once is not safe: a power loss between the
//! write and the fsync can keep the header but lose a sector inside a record, which then
//! reads as zeros; the record checksum samples one byte in 200 and often still passes, and
//! the next SQLite to open the file "rolls back" a torn page over the intact database.

use std::io::{self, Write};

/// The journal header's first 8 bytes (`aJournalMagic` in SQLite's pager).
const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// The header is padded to this many bytes; SQLite reads the size back from the header
/// (any power of two from 32 to 65536 is accepted).
pub(crate) const SECTOR: usize = 512;

/// Buffered journal bytes are written out once they reach this size.
const FLUSH_AT: usize = 256 << 10;

/// A journal streamed to `out`: the header, then one record per original page, through a
/// small buffer, so that a save of many pages never holds a second copy of them in memory.
pub(crate) struct Journal<W: Write> {
    out: W,
    buffer: Vec<u8>,
    page_size: usize,
    nonce: u32,
    /// Records the header announces, and records pushed so far.
    announced: u32,
    records: u32,
}

impl<W: Write> Journal<W> {
    /// Starts a journal of `records` original pages for a database of `original_pages`
    /// pages of `page_size` bytes. The magic and the record count stay zero (not hot) until
    /// the records are durable and [`seal`] writes them.
    pub(crate) fn start(out: W, page_size: u32, original_pages: u32, records: u32) -> Self {
        let mut buffer = Vec::with_capacity(FLUSH_AT + page_size as usize + 8);
        buffer.extend_from_slice(&[0; SEALED_LEN]);
        let nonce = nonce();
        buffer.extend_from_slice(&nonce.to_be_bytes());
        buffer.extend_from_slice(&original_pages.to_be_bytes());
        buffer.extend_from_slice(&(SECTOR as u32).to_be_bytes());
        buffer.extend_from_slice(&page_size.to_be_bytes());
        buffer.resize(SECTOR, 0);
        Journal {
            out,
            buffer,
            page_size: page_size as usize,
            nonce,
            announced: records,
            records: 0,
        }
    }

    /// Appends the original content of page `pgno`.
    pub(crate) fn push(&mut self, pgno: u32, original: &[u8]) -> io::Result<()> {
        debug_assert_eq!(original.len(), self.page_size);
        if self.records == self.announced {
            return Err(io::Error::other(
                "more journal records than the header announces",
            ));
        }
        self.buffer.extend_from_slice(&pgno.to_be_bytes());
        self.buffer.extend_from_slice(original);
        self.buffer
            .extend_from_slice(&checksum(self.nonce, original).to_be_bytes());
        self.records += 1;
        if self.buffer.len() >= FLUSH_AT {
            self.out.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Writes what is still buffered and hands `out` back. A count short of the header's
    /// is an error: SQLite would stop its rollback at the first missing record.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.records != self.announced {
            return Err(io::Error::other(
                "fewer journal records than the header announces",
            ));
        }
        self.out.write_all(&self.buffer)?;
        Ok(self.out)
    }
}

/// How many leading bytes [`seal`] writes: the magic and the record count.
pub(crate) const SEALED_LEN: usize = 12;

/// The journal's first [`SEALED_LEN`] bytes once its `records` are durable: the magic and the
/// real count, written at offset 0 over the zeros of [`Journal::start`]. They fit in one
/// sector, which a disk writes whole or not at all.
pub(crate) fn seal(records: u32) -> [u8; SEALED_LEN] {
    let mut prefix = [0; SEALED_LEN];
    prefix[..8].copy_from_slice(&MAGIC);
    prefix[8..].copy_from_slice(&records.to_be_bytes());
    prefix
}

/// `pager_cksum`: the nonce plus every 200th byte counting down from `page_size - 200`.
/// Only meant to catch records that were never completely written.
fn checksum(nonce: u32, page: &[u8]) -> u32 {
    let mut sum = nonce;
    let mut i = page.len() as isize - 200;
    while i > 0 {
        sum = sum.wrapping_add(u32::from(page[i as usize]));
        i -= 200;
    }
    sum
}

/// A fresh checksum nonce, so records left from an older journal never pass as this one's.
fn nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_file_format() {
        let mut j = Journal::start(Vec::new(), 512, 7, 1);
        let page: Vec<u8> = (0..512).map(|i| i as u8).collect();
        j.push(3, &page).unwrap();
        let nonce = j.nonce;
        let bytes = j.finish().unwrap();
        assert_eq!(bytes.len(), SECTOR + 4 + 512 + 4);
        // Not hot until sealed.
        assert_eq!(&bytes[..SEALED_LEN], &[0; SEALED_LEN]);
        let sealed = seal(1);
        assert_eq!(&sealed[..8], &MAGIC);
        assert_eq!(&sealed[8..12], &1u32.to_be_bytes());
        assert_eq!(&bytes[16..20], &7u32.to_be_bytes());
        assert_eq!(&bytes[20..24], &512u32.to_be_bytes());
        assert_eq!(&bytes[24..28], &512u32.to_be_bytes());
        assert_eq!(&bytes[SECTOR..SECTOR + 4], &3u32.to_be_bytes());
        // 512 - 200 = 312, then 112: the only indexes summed.
        let sum = nonce.wrapping_add(312 % 256).wrapping_add(112);
        assert_eq!(&bytes[SECTOR + 516..], &sum.to_be_bytes());
    }

    #[test]
    fn streams_in_chunks_and_counts_records() {
        let page = vec![7u8; 4096];
        let n = (FLUSH_AT / 4096 * 3) as u32;
        let mut j = Journal::start(Vec::new(), 4096, n, n);
        for p in 1..=n {
            j.push(p, &page).unwrap();
        }
        assert!(j.push(n + 1, &page).is_err(), "more than announced");
        let bytes = j.finish().unwrap();
        assert_eq!(bytes.len(), SECTOR + n as usize * (4096 + 8));
        let last = SECTOR + (n as usize - 1) * (4096 + 8);
        assert_eq!(&bytes[last..last + 4], &n.to_be_bytes());

        let mut short = Journal::start(Vec::new(), 4096, 2, 2);
        short.push(1, &page).unwrap();
        assert!(short.finish().is_err(), "fewer than announced");
    }
}
