//! A rollback journal in SQLite's documented format
//! (<https://www.sqlite.org/fileformat2.html#rollbackjournal>), as its pager writes one in
//! `journal_mode=DELETE`: any SQLite that finds it beside the database after a crash ("hot":
//! it exists, starts with the magic, and nobody holds the database's RESERVED lock) copies
//! the original pages back and truncates the file to the original size.

/// The journal header's first 8 bytes (`aJournalMagic` in SQLite's pager).
const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// The header is padded to this many bytes; SQLite reads the size back from the header
/// (any power of two from 32 to 65536 is accepted).
pub(crate) const SECTOR: usize = 512;

/// A journal being built in memory: the header, then one record per original page.
pub(crate) struct Journal {
    bytes: Vec<u8>,
    page_size: usize,
    nonce: u32,
    records: u32,
}

impl Journal {
    /// An empty journal for a database of `original_pages` pages of `page_size` bytes.
    pub(crate) fn new(page_size: u32, original_pages: u32, capacity_pages: usize) -> Journal {
        let page_size = page_size as usize;
        let mut bytes = Vec::with_capacity(SECTOR + capacity_pages * (page_size + 8));
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&0u32.to_be_bytes()); // nRec, filled in by `finish`
        let nonce = nonce();
        bytes.extend_from_slice(&nonce.to_be_bytes());
        bytes.extend_from_slice(&original_pages.to_be_bytes());
        bytes.extend_from_slice(&(SECTOR as u32).to_be_bytes());
        bytes.extend_from_slice(&(page_size as u32).to_be_bytes());
        bytes.resize(SECTOR, 0);
        Journal {
            bytes,
            page_size,
            nonce,
            records: 0,
        }
    }

    /// Appends the original content of page `pgno`.
    pub(crate) fn push(&mut self, pgno: u32, original: &[u8]) {
        debug_assert_eq!(original.len(), self.page_size);
        self.bytes.extend_from_slice(&pgno.to_be_bytes());
        self.bytes.extend_from_slice(original);
        self.bytes
            .extend_from_slice(&checksum(self.nonce, original).to_be_bytes());
        self.records += 1;
    }

    /// The journal's bytes with the record count in its header. The whole journal is made
    /// durable before the database is touched, so the count can be the real one at once
    /// (SQLite's pager writes 0 first only because it syncs the records and the count
    /// separately).
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.bytes[8..12].copy_from_slice(&self.records.to_be_bytes());
        self.bytes
    }
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
        let mut j = Journal::new(512, 7, 1);
        let page: Vec<u8> = (0..512).map(|i| i as u8).collect();
        j.push(3, &page);
        let nonce = j.nonce;
        let bytes = j.finish();
        assert_eq!(bytes.len(), SECTOR + 4 + 512 + 4);
        assert_eq!(&bytes[..8], &MAGIC);
        assert_eq!(&bytes[8..12], &1u32.to_be_bytes());
        assert_eq!(&bytes[16..20], &7u32.to_be_bytes());
        assert_eq!(&bytes[20..24], &512u32.to_be_bytes());
        assert_eq!(&bytes[24..28], &512u32.to_be_bytes());
        assert_eq!(&bytes[SECTOR..SECTOR + 4], &3u32.to_be_bytes());
        // 512 - 200 = 312, then 112: the only indexes summed.
        let sum = nonce.wrapping_add(312 % 256).wrapping_add(112);
        assert_eq!(&bytes[SECTOR + 516..], &sum.to_be_bytes());
    }
}
