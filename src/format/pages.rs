//! Page numbers as the in-place save walks them: runs of consecutive pages (one read or
//! write each), and the page SQLite never stores anything in.

/// Runs of consecutive page numbers in `numbers` (ascending), as (index of the first, the
/// run), at most `max` long: each is one read or write instead of one per page.
pub(crate) fn runs(numbers: &[u32], max: usize) -> impl Iterator<Item = (usize, &[u32])> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let first = *numbers.get(at)?;
        let len = numbers[at..]
            .iter()
            .enumerate()
            .take_while(|&(i, &p)| i < max && p == first + i as u32)
            .count();
        let run = (at, &numbers[at..at + len]);
        at += len;
        Some(run)
    })
}

/// The most bytes read or written at once. SQLite's unix VFS writes at most 128 KiB per call
/// (`seekAndWrite` masks the length to 17 bits), so a run stays below that.
const RUN_BYTES: usize = 64 << 10;

/// The longest run of `page_size`-byte pages: [`RUN_BYTES`], or one page if pages are larger.
pub(crate) fn run_pages(page_size: u32) -> usize {
    (RUN_BYTES / page_size as usize).max(1)
}

/// SQLite never stores data in the page holding this byte (the lock-byte page); a backup
/// leaves it zero in the destination.
pub(crate) const PENDING_BYTE: u64 = 0x4000_0000;

/// The page holding [`PENDING_BYTE`], which SQLite never stores anything in (its locks).
pub(crate) fn pending_byte_page(page_size: u32) -> u32 {
    (PENDING_BYTE / u64::from(page_size)) as u32 + 1
}

/// Zeroes the lock-byte page where `chunk`, read at `offset`, covers it.
pub(crate) fn blank_lock_byte_page(chunk: &mut [u8], offset: u64, page_size: u64) {
    let end = offset + chunk.len() as u64;
    if offset <= PENDING_BYTE && PENDING_BYTE < end {
        let from = (PENDING_BYTE - offset) as usize;
        let to = (from + page_size as usize).min(chunk.len());
        chunk[from..to].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::{blank_lock_byte_page, pending_byte_page, run_pages, runs, PENDING_BYTE};

    #[test]
    fn runs_are_consecutive_pages_and_bounded() {
        let numbers = [1, 2, 3, 5, 6, 9];
        let found: Vec<(usize, Vec<u32>)> =
            runs(&numbers, 16).map(|(at, r)| (at, r.to_vec())).collect();
        assert_eq!(
            found,
            vec![(0, vec![1, 2, 3]), (3, vec![5, 6]), (5, vec![9])]
        );
        let max = run_pages(4096);
        assert_eq!(max, 16);
        assert_eq!(run_pages(65536), 1);
        let long: Vec<u32> = (10..10 + max as u32 + 3).collect();
        let lens: Vec<usize> = runs(&long, max).map(|(_, r)| r.len()).collect();
        assert_eq!(lens, vec![max, 3]);
        assert_eq!(runs(&[], max).count(), 0);
    }

    #[test]
    fn the_lock_byte_page_is_blanked_where_a_chunk_covers_it() {
        let mut chunk = vec![7u8; 8192];
        blank_lock_byte_page(&mut chunk, PENDING_BYTE - 4096, 1024);
        assert!(chunk[..4096].iter().all(|&b| b == 7));
        assert!(chunk[4096..5120].iter().all(|&b| b == 0));
        assert!(chunk[5120..].iter().all(|&b| b == 7));
        let mut far = vec![7u8; 4096];
        blank_lock_byte_page(&mut far, 0, 4096);
        assert!(far.iter().all(|&b| b == 7));
    }

    #[test]
    fn the_pending_byte_page_holds_the_byte_at_one_gib() {
        assert_eq!(pending_byte_page(4096), 262_145);
        assert_eq!(pending_byte_page(65536), 16_385);
    }
}
