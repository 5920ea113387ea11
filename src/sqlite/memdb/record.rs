//! Which pages of a pool's database were written since its baseline: the version of a file
//! the database is known to equal page for page.

use std::collections::HashMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::format::header;
use crate::fs::{canonical, FileId};

/// A file this database equalled page for page when it was recorded (after a save, or after
/// a load by `restore_from`), identified by what a later save checks before writing in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Baseline {
    pub(crate) path: PathBuf,
    pub(crate) id: FileId,
    /// Header bytes 24..28 as the file holds them.
    pub(crate) counter: u32,
    pub(crate) page_size: u32,
}

impl Baseline {
    /// The file at `path`, of identity `id` and this `header`, read `len` bytes long, as a
    /// baseline: only a rollback-mode file whose length is exactly its pages, as `stat` saw it.
    pub(crate) fn of(path: &Path, id: FileId, header: &[u8; 100], len: u64) -> Option<Baseline> {
        let page_size = header::page_size(header);
        let whole_pages = page_size >= 512 && len.is_multiple_of(u64::from(page_size));
        if !(whole_pages && len == id.size && header::is_rollback_mode(header)) {
            return None;
        }
        Some(Baseline {
            path: canonical(path)?,
            id,
            counter: header::change_counter(header),
            page_size,
        })
    }
}

/// Runs an operation that makes the database equal to a file (a full save, a restore) and
/// returns its result with the baseline it leaves. The record restarts before it runs, so
/// writes meanwhile count as changes since; the baseline is installed only if the operation
/// succeeded and nothing cleared the record since.
pub(crate) fn rebase<T, E>(
    tracker: Option<&Tracker>,
    run: impl FnOnce() -> (Result<T, E>, Option<Baseline>),
) -> Result<T, E> {
    let epoch = tracker.map(Tracker::clear);
    let (result, baseline) = run();
    if let (Some(t), Some(epoch)) = (tracker, epoch) {
        match (&result, baseline) {
            (Ok(_), Some(b)) => t.install(epoch, b),
            _ => t.forget(epoch),
        }
    }
    result
}

/// The write record of one memdb database, shared by every connection's file object.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    state: Mutex<State>,
    /// Opens into the database, for autosaves.
    pub(crate) opens: super::opens::Opens,
}

#[derive(Debug, Default)]
struct State {
    /// Bit `p` set: page `p + 1` was written since the last clear.
    dirty: Vec<u64>,
    /// The size of every write since the last clear (0: none yet).
    page_size: u32,
    /// A write the record cannot describe exactly happened since the last clear.
    unknown: bool,
    /// Counts clears, so an operation only installs a baseline if nobody cleared after it.
    epoch: u64,
    /// The store's size as of the last write or truncate (`None`: ask memdb).
    size: Option<i64>,
    /// The change counter of the last page 1 written through the shim (`None`: none seen,
    /// or the store was cut below the counter). Every commit writes page 1 with the counter
    /// bumped, so a commit by a connection that bypasses the shim (a plain `vfs=memdb` one)
    /// leaves a counter in the store the record never saw.
    counter: Option<u32>,
    baseline: Option<Baseline>,
    /// The replicas' record, independent of the one above.
    stamps: Stamps,
}

/// What [`Tracker::take`] hands an incremental save.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) epoch: u64,
    pub(crate) baseline: Option<Baseline>,
    /// Pages written since the baseline, ascending; `None` when unknown.
    pub(crate) dirty: Option<Vec<u32>>,
    /// The change counter memory's page 1 must hold for the record to be complete.
    pub(crate) counter: Option<u32>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the bitmap half-updated in a way that
        // loses pages (bits are only ever set outside `take`), but be conservative anyway.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.unknown = true;
                g.baseline = None;
                g.stamps.doubt();
                g
            }
        }
    }

    /// Runs `write`, an `xWrite` of `amount` bytes at `offset`, and records the pages it
    /// touched unless `untracked`. The lock is held across the write (writes to one store
    /// are serialised by memdb's EXCLUSIVE lock anyway), so the size known before it is the
    /// store's; `file_size` asks memdb when no size is known yet. `counter` is the change
    /// counter the write puts in the header, if it writes page 1; `stored_counter` reads the
    /// one the store holds before it (`None`: no page 1 yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn track_write(
        &self,
        offset: i64,
        amount: i32,
        untracked: bool,
        counter: Option<u32>,
        stored_counter: impl FnOnce() -> Option<u32>,
        file_size: impl FnOnce() -> Option<i64>,
        write: impl FnOnce() -> i32,
    ) -> i32 {
        let mut s = self.lock();
        // A page 1 in the store that the record did not write: someone bypassing the shim
        // committed. Checked on every tracked page-1 write, because some of them (a rollback
        // writing back the original page 1) would otherwise install that counter as seen.
        if counter.is_some() && !untracked && stored_counter() != s.counter {
            s.unknown = true;
            s.stamps.doubt();
        }
        let size_before = match s.size {
            Some(size) => size,
            None => file_size().unwrap_or(-1),
        };
        let rc = write();
        if rc != 0 {
            // The store may or may not hold the bytes: no longer sure of anything.
            s.unknown = true;
            s.stamps.doubt();
            s.size = None;
            return rc;
        }
        s.size = Some(size_before.max(offset + i64::from(amount)));
        // A restore's untracked writes are changes all the same for a replica.
        s.stamps.record(offset, amount, size_before);
        if !untracked {
            s.record_write(offset, amount, size_before);
            s.check_counter(counter);
        }
        if counter.is_some() {
            s.counter = counter;
        }
        rc
    }

    /// Runs `truncate`, an `xTruncate` to `size` bytes, and records it unless `untracked`.
    /// Shrinking needs no pages marked (a save compares page counts); a size that is not a
    /// whole number of pages cannot be described.
    pub(crate) fn track_truncate(
        &self,
        size: i64,
        untracked: bool,
        truncate: impl FnOnce() -> i32,
    ) -> i32 {
        let mut s = self.lock();
        let rc = truncate();
        s.size = None; // memdb refuses to grow by truncation; ask it next time
        if rc != 0 {
            s.unknown = true;
            s.stamps.doubt();
            return rc;
        }
        if s.stamps.page_size == 0 || size % i64::from(s.stamps.page_size) != 0 {
            s.stamps.doubt();
        }
        if size < 28 {
            s.counter = None; // the store holds no counter now
        }
        let page = if s.page_size == 0 {
            512
        } else {
            i64::from(s.page_size)
        };
        if !untracked && size % page != 0 {
            s.unknown = true;
        }
        rc
    }

    /// Starts an operation that will make a new baseline (a full save or a restore): forgets
    /// the old baseline and every write so far. Returns the epoch to install with.
    pub(crate) fn clear(&self) -> u64 {
        let mut s = self.lock();
        s.reset();
        s.baseline = None;
        s.epoch
    }

    /// Starts an incremental save: hands over the baseline and the pages written since it,
    /// and starts a new record. The baseline is moved out, so a concurrent save cannot use it
    /// with only part of the record.
    pub(crate) fn take(&self) -> Taken {
        let mut s = self.lock();
        let dirty = (!s.unknown).then(|| s.pages());
        let baseline = s.baseline.take();
        s.reset();
        Taken {
            epoch: s.epoch,
            baseline,
            dirty,
            counter: s.counter,
        }
    }

    /// About how many bytes of pages the next [`take`](Self::take) hands over: the pages
    /// marked so far at the size they were written. Read before a save takes its read lock,
    /// to size its buffer; pages marked in between only cost growing it under the lock.
    pub(crate) fn marked_bytes(&self) -> u64 {
        let s = self.lock();
        let marked: u64 = s.dirty.iter().map(|w| u64::from(w.count_ones())).sum();
        marked * u64::from(s.page_size)
    }

    /// Installs `baseline` if nothing cleared the record since `epoch`. Writes recorded since
    /// with another page size make the record unknown.
    pub(crate) fn install(&self, epoch: u64, baseline: Baseline) {
        let mut s = self.lock();
        if s.epoch != epoch {
            return;
        }
        if s.page_size != 0 && s.page_size != baseline.page_size {
            s.unknown = true;
        }
        s.page_size = baseline.page_size;
        s.baseline = Some(baseline);
    }

    /// Puts back what [`take`](Self::take) handed a save that wrote nothing to the file (it
    /// gave up on a busy lock), if no save or restore came since: the baseline returns, and
    /// its pages join those written since, so the next save covers both.
    pub(crate) fn give_back(&self, taken: Taken) {
        let (Some(baseline), Some(pages)) = (taken.baseline, taken.dirty) else {
            return;
        };
        let mut s = self.lock();
        if s.epoch != taken.epoch || s.baseline.is_some() {
            return;
        }
        if s.page_size != 0 && s.page_size != baseline.page_size {
            s.unknown = true;
        }
        for page in pages {
            s.mark(page as usize - 1);
        }
        s.page_size = baseline.page_size;
        s.baseline = Some(baseline);
    }

    /// Drops the baseline if nothing cleared the record since `epoch`.
    pub(crate) fn forget(&self, epoch: u64) {
        let mut s = self.lock();
        if s.epoch == epoch {
            s.baseline = None;
        }
    }
}

impl State {
    /// Marks the page an aligned one-page write touched, and the gap memdb zero-fills when
    /// a write lands past the end; anything else makes the record unknown.
    fn record_write(&mut self, offset: i64, amount: i32, size_before: i64) {
        if self.unknown {
            return;
        }
        let ps = i64::from(amount);
        let aligned = (512..=65536).contains(&amount)
            && (amount as u32).is_power_of_two()
            && offset >= 0
            && offset % ps == 0
            && size_before >= 0
            && size_before % ps == 0;
        if !aligned || (self.page_size != 0 && self.page_size != amount as u32) {
            self.unknown = true;
            return;
        }
        self.page_size = amount as u32;
        let first = (offset.min(size_before) / ps) as usize;
        let last = (offset / ps) as usize;
        for page in first..=last {
            self.mark(page);
        }
    }

    /// A page 1 written with a counter that neither repeats the last one seen (another write
    /// in the same transaction), nor follows it (a commit), nor precedes it (a rollback
    /// putting page 1 back) means commits happened that the record did not see.
    fn check_counter(&mut self, counter: Option<u32>) {
        if let (Some(now), Some(last)) = (counter, self.counter) {
            if now.wrapping_sub(last) > 1 && last.wrapping_sub(now) > 1 {
                self.unknown = true;
                self.stamps.doubt();
            }
        }
    }

    fn reset(&mut self) {
        self.dirty.clear();
        self.page_size = 0;
        self.unknown = false;
        self.epoch += 1;
    }

    fn mark(&mut self, page: usize) {
        let (word, bit) = (page / 64, page % 64);
        if word >= self.dirty.len() {
            self.dirty.resize(word + 1, 0);
        }
        self.dirty[word] |= 1 << bit;
    }

    /// The 1-based numbers of the pages marked.
    fn pages(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (w, &word) in self.dirty.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                out.push((w * 64 + b + 1) as u32);
                bits &= bits - 1;
            }
        }
        out
    }
}

/// What [`Tracker::written_since`] hands a replica.
#[cfg(feature = "replica")]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Written {
    /// The mark to pass next time: this answer covers every write up to it.
    pub(crate) mark: u64,
    /// Pages written after the mark asked about, ascending; `None` when not provable.
    pub(crate) pages: Option<Vec<u32>>,
    /// The size of those writes (0: none yet).
    pub(crate) page_size: u32,
    /// The change counter memory's page 1 must hold for the answer to be complete.
    pub(crate) counter: Option<u32>,
}

#[cfg(feature = "replica")]
impl Tracker {
    /// The pages written after `mark` (a [`Written::mark`] from an earlier call; `None`:
    /// never asked). Asked under a read transaction, so that no write lands in between.
    /// Independent of saves: nothing is cleared, so any number of replicas can ask.
    pub(crate) fn written_since(&self, mark: Option<u64>) -> Written {
        let s = self.lock();
        let st = &s.stamps;
        let pages = mark.filter(|&m| st.doubt <= m).map(|m| {
            let pages = st.pages.iter().enumerate().filter(|&(_, &w)| w > m);
            pages.map(|(p, _)| p as u32 + 1).collect()
        });
        Written {
            mark: st.now,
            pages,
            page_size: st.page_size,
            counter: s.counter,
        }
    }
}

/// The replicas' write record: the number of the last write of each page. A replica keeps
/// the number it last saw; the pages stamped after it are what changed since. Nothing is
/// ever cleared, so it cannot interfere with saves, nor one replica with another. Without
/// the `replica` feature it records nothing.
#[cfg(feature = "replica")]
#[derive(Debug, Default)]
struct Stamps {
    /// Writes recorded so far.
    now: u64,
    /// The number of the last write of page `p + 1` (0: none).
    pages: Vec<u64>,
    /// The number of the last write it could not describe.
    doubt: u64,
    /// The size of every write since the last doubt about it (0: none yet).
    page_size: u32,
}

#[cfg(not(feature = "replica"))]
#[derive(Debug, Default)]
struct Stamps {
    page_size: u32,
}

#[cfg(not(feature = "replica"))]
impl Stamps {
    fn doubt(&mut self) {}
    fn record(&mut self, _: i64, _: i32, _: i64) {}
}

#[cfg(feature = "replica")]
impl Stamps {
    fn doubt(&mut self) {
        self.now += 1;
        self.doubt = self.now;
    }

    /// Stamps the page an aligned one-page write touched, and the gap memdb zero-fills;
    /// anything else is a doubt (a fresh load's large chunks, a page-size change).
    fn record(&mut self, offset: i64, amount: i32, size_before: i64) {
        let ps = i64::from(amount);
        let aligned = (512..=65536).contains(&amount)
            && (amount as u32).is_power_of_two()
            && offset >= 0
            && offset % ps == 0
            && size_before >= 0
            && size_before % ps == 0;
        if !aligned || (self.page_size != 0 && self.page_size != amount as u32) {
            self.doubt();
            self.pages.clear();
            self.page_size = 0;
            return;
        }
        self.page_size = amount as u32;
        self.now += 1;
        let (first, last) = (
            (offset.min(size_before) / ps) as usize,
            (offset / ps) as usize,
        );
        if last >= self.pages.len() {
            self.pages.resize(last + 1, 0);
        }
        for page in first..=last {
            self.pages[page] = self.now;
        }
    }
}

/// Trackers by memdb database name: every connection that opens the name shares one. Entries
/// die with the last file object (memdb frees the store then too).
fn registry() -> &'static Mutex<HashMap<Vec<u8>, Weak<Tracker>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Vec<u8>, Weak<Tracker>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The tracker of the memdb database `name`, created on first use.
pub(crate) fn for_name(name: &CStr) -> Arc<Tracker> {
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    let key = name.to_bytes().to_vec();
    if let Some(alive) = map.get(&key).and_then(Weak::upgrade) {
        return alive;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let fresh = Arc::new(Tracker::default());
    map.insert(key, Arc::downgrade(&fresh));
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_pages_gaps_and_doubts() {
        let t = Tracker::default();
        let write = |offset: i64, amount: i32, size: i64| {
            t.track_write(offset, amount, false, None, || None, || Some(size), || 0);
        };
        write(0, 4096, 0);
        write(4096 * 4, 4096, 4096 * 2); // size known from the first write: 4096
        assert_eq!(t.take().dirty, Some(vec![1, 2, 3, 4, 5]));
        write(100, 4096, 0);
        assert_eq!(t.take().dirty, None);
        write(0, 4096, 0);
        write(0, 8192, 0);
        assert_eq!(t.take().dirty, None);
        t.track_truncate(4095, false, || 0);
        assert_eq!(t.take().dirty, None);
        t.track_write(0, 4096, false, None, || None, || Some(0), || 1);
        assert_eq!(t.take().dirty, None, "a failed write is a doubt");
        t.track_write(0, 4096, true, None, || None, || Some(0), || 0);
        assert_eq!(
            t.take().dirty,
            Some(vec![]),
            "untracked writes are not recorded"
        );
    }

    #[test]
    fn a_counter_the_record_never_saw_makes_it_unknown() {
        let t = Tracker::default();
        // The counter memdb's page 1 holds.
        let store = std::cell::Cell::new(None);
        let page1 = |counter: u32, untracked: bool| {
            let stored = || store.get();
            t.track_write(
                0,
                4096,
                untracked,
                Some(counter),
                stored,
                || Some(4096),
                || 0,
            );
            store.set(Some(counter));
        };
        let bypass = |counter: u32| store.set(Some(counter));
        page1(7, false);
        page1(8, false); // a commit
        page1(8, false); // the same transaction again
        page1(7, false); // a rollback puts page 1 back
        let taken = t.take();
        assert_eq!(taken.dirty, Some(vec![1]));
        assert_eq!(taken.counter, Some(7));
        bypass(8);
        page1(9, false); // 8 was committed by someone the shim never saw
        assert_eq!(t.take().dirty, None);
        page1(500, true); // a restore sets any counter, untracked
        page1(501, false);
        let taken = t.take();
        assert_eq!(taken.dirty, Some(vec![1]));
        assert_eq!(taken.counter, Some(501));
        bypass(502);
        // A spilled transaction rolls back: the original page 1 goes back with the
        // unseen counter, one past the last seen, as a commit's would be.
        page1(502, false);
        assert_eq!(t.take().dirty, None, "a rollback is no commit");
        t.track_truncate(0, false, || 0);
        store.set(None);
        page1(1, false); // a new database in the emptied store
        assert_eq!(t.take().dirty, Some(vec![1]));
    }

    #[test]
    #[cfg(feature = "replica")]
    fn replicas_see_writes_whatever_saves_take() {
        let t = Tracker::default();
        let write = |offset: i64, size: i64, untracked: bool| {
            t.track_write(offset, 4096, untracked, None, || None, || Some(size), || 0);
        };
        assert_eq!(t.written_since(None).pages, None, "never asked: unknown");
        write(0, 0, false);
        let first = t.written_since(None).mark;
        write(4096 * 2, 4096, false); // pages 2 and 3 (the gap)
        let _ = t.take(); // a save takes its record: the replica's stays
        let w = t.written_since(Some(first));
        assert_eq!(w.pages, Some(vec![2, 3]));
        assert_eq!(w.page_size, 4096);
        write(0, 4096 * 3, true); // a restore's untracked write counts
        assert_eq!(t.written_since(Some(w.mark)).pages, Some(vec![1]));
        let mark = t.written_since(Some(w.mark)).mark;
        assert_eq!(t.written_since(Some(mark)).pages, Some(vec![]));
        t.track_write(0, 1 << 20, true, None, || None, || Some(0), || 0);
        assert_eq!(
            t.written_since(Some(mark)).pages,
            None,
            "a chunk is a doubt"
        );
        let mark = t.written_since(None).mark;
        t.track_write(0, 4096, false, None, || None, || Some(0), || 1);
        assert_eq!(t.written_since(Some(mark)).pages, None, "a failed write");
        let mark = t.written_since(None).mark;
        write(0, 4096, false);
        t.track_truncate(4000, false, || 0);
        assert_eq!(t.written_since(Some(mark)).pages, None, "a partial page");
        let mark = t.written_since(None).mark;
        write(0, 4096, false);
        write(0, 4096, false);
        t.clear();
        assert_eq!(
            t.written_since(Some(mark)).pages,
            Some(vec![1]),
            "saves clear theirs"
        );
    }

    #[test]
    fn only_the_clearing_operation_installs() {
        let t = Tracker::default();
        let base = Baseline {
            path: "x".into(),
            id: FileId {
                dev: 1,
                ino: 2,
                size: 4096,
                mtime_ns: 0,
            },
            counter: 1,
            page_size: 4096,
        };
        let first = t.clear();
        let second = t.clear();
        t.install(first, base.clone());
        assert!(t.take().baseline.is_none());
        let third = t.clear();
        assert_ne!(second, third);
        t.install(third, base.clone());
        let taken = t.take();
        assert_eq!(taken.baseline, Some(base));
        assert!(t.take().baseline.is_none(), "a baseline is used once");
    }

    #[test]
    fn rebase_installs_only_what_a_successful_operation_leaves() {
        let t = Tracker::default();
        let id = FileId {
            dev: 1,
            ino: 2,
            size: 8192,
            mtime_ns: 0,
        };
        let mut header = [0u8; 100];
        header[16..18].copy_from_slice(&4096u16.to_be_bytes());
        header[18] = 1;
        header[19] = 1;
        header::set_field(&mut header, header::CHANGE_COUNTER, 5);
        let dir = std::env::temp_dir();
        let base = Baseline::of(&dir.join("x.db"), id, &header, 8192).unwrap();
        assert_eq!((base.counter, base.page_size), (5, 4096));
        assert!(
            Baseline::of(&dir.join("x.db"), id, &header, 4096).is_none(),
            "size"
        );
        let failed: Result<(), ()> = rebase(Some(&t), || (Err(()), Some(base.clone())));
        assert!(failed.is_err() && t.take().baseline.is_none());
        let done: Result<(), ()> = rebase(Some(&t), || (Ok(()), Some(base.clone())));
        assert!(done.is_ok());
        assert_eq!(t.take().baseline, Some(base));
    }
}
