//! Reading a replica back: which syncs can be restored, and the image of one of them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use object_store::path::Path;

use super::format::{self, Header, Kind};
use super::image::{base_image, bytes_of, Image};
use super::source::object_label;
use super::store::{Fetched, Folder, Listing, Store, LISTINGS};
use super::{RestoreTarget, SyncInfo};
use crate::error::{BackupError, Operation};

const OP: Operation = Operation::Restore;

/// The object that makes sync `n` a base (a whole image), if any: compaction's snapshot
/// first, else a sync object that is itself a snapshot.
fn bases_at(listing: &Listing, n: u64) -> Vec<(Folder, &Header)> {
    let mut out = Vec::new();
    if let Some(Ok(h)) = listing.get(&(Folder::Snapshots, n)) {
        out.push((Folder::Snapshots, h));
    }
    if let Some(Ok(h)) = listing.get(&(Folder::Syncs, n)) {
        if h.kind == Kind::Snapshot {
            out.push((Folder::Syncs, h));
        }
    }
    out
}

/// Every sync whose chain of headers is complete (a base, then deltas of its generation
/// numbered one after another), oldest first, with its time.
pub(crate) fn restorable(listing: &Listing) -> Vec<SyncInfo> {
    let numbers: std::collections::BTreeSet<u64> = listing.keys().map(|&(_, n)| n).collect();
    let mut out = Vec::new();
    // The last restorable sync and its generation.
    let mut chain: Option<(u64, u64)> = None;
    for n in numbers {
        let bases = bases_at(listing, n);
        let delta = match listing.get(&(Folder::Syncs, n)) {
            Some(Ok(h)) if h.kind == Kind::Delta => Some(h),
            _ => None,
        };
        let step = if let Some((_, h)) = bases.first() {
            Some(*h)
        } else {
            delta.filter(|d| chain == Some((n - 1, d.generation)))
        };
        chain = step.map(|h| (n, h.generation));
        if let Some(h) = step {
            out.push(SyncInfo {
                number: n,
                time: h.time(),
            });
        }
    }
    out
}

/// The numbers of `syncs` (ascending) as runs: "1, 3 to 5, 8".
fn ranges(syncs: &[SyncInfo]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in syncs {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(s.number) => *end = s.number,
            _ => runs.push((s.number, s.number)),
        }
    }
    let run = |&(a, b): &(u64, u64)| match a == b {
        true => a.to_string(),
        false => format!("{a} to {b}"),
    };
    runs.iter().map(run).collect::<Vec<_>>().join(", ")
}

/// The sync `target` names, from what the store holds.
fn resolve(listing: &Listing, target: &RestoreTarget, store: &Store) -> Result<u64, BackupError> {
    let prefix = &store.prefix;
    let syncs = restorable(listing);
    let range = match ranges(&syncs) {
        r if r.is_empty() => "no sync can be restored".into(),
        r => format!("syncs {r} can be restored"),
    };
    let none = |what: String| BackupError::InvalidInput {
        op: OP,
        path: object_label(prefix),
        reason: format!("{what} in this replica ({range})"),
    };
    match *target {
        // The newest sync the store has: if its chain is broken, restoring it fails and
        // says where, rather than quietly going back in time.
        RestoreTarget::Latest => {
            let n = listing
                .keys()
                .map(|&(_, n)| n)
                .max()
                .ok_or_else(|| none("no sync".into()))?;
            // Named so, but not an object of ours: say so of it, not of a gap before it.
            let at_n = [Folder::Syncs, Folder::Snapshots]
                .into_iter()
                .filter_map(|f| listing.get(&(f, n)).map(|h| (f, h)));
            match at_n
                .clone()
                .find_map(|(f, h)| h.as_ref().err().map(|r| (f, r)))
            {
                Some((f, reason)) if at_n.clone().all(|(_, h)| h.is_err()) => {
                    Err(BackupError::invalid_db(
                        OP,
                        &object_label(&store.location(f, n)),
                        reason.clone(),
                    ))
                }
                _ => Ok(n),
            }
        }
        RestoreTarget::Sync(n) => {
            if listing.keys().any(|&(_, m)| m == n) {
                Ok(n)
            } else {
                Err(none(format!("no sync {n}")))
            }
        }
        RestoreTarget::At(t) => syncs
            .iter()
            .rev()
            .find(|s| s.time <= t)
            .map(|s| s.number)
            .ok_or_else(|| none(format!("no sync at or before {t:?}"))),
    }
}

/// The whole image of the database at sync `n`, built in the base object's own buffer or
/// mapping, every object checked on the way.
fn image_of(store: &Store, listing: &Listing, n: u64) -> Result<(Image, SystemTime), BackupError> {
    let invalid = |location: &Path, reason: String| {
        BackupError::invalid_db(OP, &object_label(location), reason)
    };
    // Newest first; at one number, compaction's snapshot before the sync object.
    let mut bases: Vec<(u64, Folder)> = listing
        .keys()
        .filter(|&&(_, m)| m <= n)
        .flat_map(|&(_, m)| bases_at(listing, m).into_iter().map(move |(f, _)| (m, f)))
        .collect();
    bases.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    bases.dedup();
    // The image's final size, from the header of sync `n`: the image is allocated once.
    let final_len = [Folder::Syncs, Folder::Snapshots]
        .iter()
        .find_map(|&f| match listing.get(&(f, n)) {
            Some(Ok(h)) => Some(h.page_count as usize * h.page_size as usize),
            _ => None,
        })
        .unwrap_or(0);
    let mut first_error = None;
    for (b, folder) in bases {
        let location = store.location(folder, b);
        // The base and every delta after it whose header was read whole, fetched concurrently;
        // another is refused for its header below, unread (a FIFO would never answer).
        let mut wanted = vec![location.clone()];
        wanted.extend(
            (b + 1..=n)
                .filter(|&m| matches!(listing.get(&(Folder::Syncs, m)), Some(Ok(_))))
                .map(|m| store.location(Folder::Syncs, m)),
        );
        let mut objects = store.get_all(&wanted).into_iter();
        let base = objects.next().expect("the base was asked for");
        // The deltas' checksums are checked on a second thread while this one checks the
        // base's: each is a pass over memory.
        let (base, deltas) = std::thread::scope(|s| {
            let deltas = s.spawn(|| {
                objects
                    .map(|fetched| fetched.map(|f| bytes_of(f).and_then(format::decode)))
                    .collect::<Vec<_>>()
            });
            let base = base.and_then(|fetched| {
                let checked = checked_base(listing, fetched, b, folder, final_len);
                checked.map_err(|r| invalid(&location, r))
            });
            let deltas = deltas
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (base, deltas)
        });
        let mut deltas = deltas.into_iter();
        let (base, mut image) = match base {
            Ok(found) => found,
            Err(e) => {
                // An older base may still lead to `n`.
                first_error.get_or_insert(e);
                continue;
            }
        };
        let generation = base.generation;
        let page_size = base.page_size;
        let mut time = base.time();
        // Every delta is checked before any is applied.
        let mut checked = Vec::new();
        let mut pages_now = image.bytes().len() / page_size as usize;
        for m in b + 1..=n {
            let location = store.location(Folder::Syncs, m);
            match listing.get(&(Folder::Syncs, m)) {
                None => {
                    return Err(invalid(
                        &location,
                        format!(
                            "missing from the store: sync {n} needs it (from the image of sync {b})"
                        ),
                    ))
                }
                Some(Err(reason)) => return Err(invalid(&location, reason.clone())),
                Some(Ok(_)) => {}
            }
            let delta = deltas.next().expect("every present delta was asked for")?;
            let delta = delta.map_err(|r| invalid(&location, r))?;
            let h = &delta.header;
            if h.kind != Kind::Delta || h.sync != m {
                return Err(invalid(
                    &location,
                    format!(
                        "not the delta of sync {m}: its header says sync {} ({:?})",
                        h.sync, h.kind
                    ),
                ));
            }
            if h.generation != generation {
                return Err(invalid(
                    &location,
                    format!(
                        "written by another replica (generation {:016x}, the image of sync {b} is {generation:016x})",
                        h.generation
                    ),
                ));
            }
            if h.page_size != page_size {
                return Err(invalid(
                    &location,
                    format!(
                        "page size {} differs from its base's {page_size}",
                        h.page_size
                    ),
                ));
            }
            check_first_page(h, delta.numbers.first().copied(), &delta.pages)
                .map_err(|r| invalid(&location, r))?;
            grows_only_by_its_pages(pages_now, &delta).map_err(|r| invalid(&location, r))?;
            pages_now = h.page_count as usize;
            time = h.time();
            checked.push(delta);
        }
        image.apply_all(&checked);
        return Ok((image, time));
    }
    // No usable base: name the newest object whose header was bad, if any.
    let unreadable = listing
        .iter()
        .rev()
        .filter(|(&(_, m), _)| m <= n)
        .find_map(|(&(f, m), h)| {
            h.as_ref()
                .err()
                .map(|r| invalid(&store.location(f, m), r.clone()))
        });
    Err(first_error.or(unreadable).unwrap_or_else(|| {
        invalid(
            &store.location(Folder::Syncs, n),
            format!("no image of sync {n} or of a sync before it is left in the store"),
        )
    }))
}

/// A database grows only by pages that were written (memdb zero-fills a gap, and the write
/// record marks the gap as written): a delta's page count above both the image's and its
/// own highest page is forged, and would make the restore allocate without bound.
fn grows_only_by_its_pages(pages_now: usize, delta: &format::Object) -> Result<(), String> {
    let highest = delta.numbers.iter().copied().max().unwrap_or(0) as usize;
    let most = pages_now.max(highest);
    match delta.header.page_count as usize <= most {
        true => Ok(()),
        false => Err(format!(
            "its page count {} is more than the image's {pages_now} pages and its own highest page {highest}",
            delta.header.page_count
        )),
    }
}

/// Page 1, when an object holds it (`first` is its first page number, `pages` its pages),
/// must be a SQLite header of the object's page size: the CRCs prove the bytes are the ones
/// written, this that they are a database's.
fn check_first_page(header: &Header, first: Option<u32>, pages: &[u8]) -> Result<(), String> {
    if first != Some(1) {
        return Ok(());
    }
    let page = &pages[..header.page_size as usize];
    let field = u16::from_be_bytes([page[16], page[17]]) as u32;
    let size = if field == 1 { 65536 } else { field };
    if !page.starts_with(b"SQLite format 3\0") || size != header.page_size {
        return Err(format!(
            "page 1 is not the header of a database of {}-byte pages",
            header.page_size
        ));
    }
    Ok(())
}

/// The base of a chain, checked: the object itself (see [`base_image`]), that it is the
/// image of sync `b`, and that a compaction image is of the replica that wrote sync `b`.
fn checked_base(
    listing: &Listing,
    fetched: Fetched,
    b: u64,
    folder: Folder,
    final_len: usize,
) -> Result<(Header, Image), String> {
    let (header, image) = base_image(fetched, final_len)?;
    if header.kind != Kind::Snapshot || header.sync != b {
        return Err(format!("its header says sync {}", header.sync));
    }
    let first = (header.page_count > 0).then_some(1);
    check_first_page(&header, first, image.bytes())?;
    if let Some(Ok(sync)) = listing.get(&(Folder::Syncs, b)) {
        if folder == Folder::Snapshots && sync.generation != header.generation {
            return Err(format!(
                "written by another replica (generation {:016x}, sync {b} is {:016x})",
                header.generation, sync.generation
            ));
        }
    }
    Ok((header, image))
}

pub(crate) fn list_syncs(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    prefix: &Path,
) -> Result<Vec<SyncInfo>, BackupError> {
    let store = Store::new(store, prefix.clone(), OP)?;
    Ok(restorable(&store.list()?))
}

/// Rebuilds the image of the sync `target` names and loads it into `conn`.
pub(crate) fn restore_from_replica(
    conn: &mut diesel::SqliteConnection,
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    prefix: &Path,
    target: RestoreTarget,
) -> Result<super::RestoreInfo, BackupError> {
    let store = Store::new(store, prefix.clone(), OP)?;
    let mut tries = 1;
    let (sync, image, time) = loop {
        let listing = store.list()?;
        let sync = resolve(&listing, &target, &store)?;
        match image_of(&store, &listing, sync) {
            Ok((image, time)) => break (sync, image, time),
            // Retention deleted an object between the listing and its read: what it left
            // is listed again (a replica deletes only what a newer image makes unneeded).
            Err(e) if vanished(&e) && tries < LISTINGS => tries += 1,
            Err(e) => return Err(e),
        }
    };
    super::source::restore_image(conn, image.bytes())?;
    Ok(super::RestoreInfo { sync, time })
}

/// An object the listing named was not found when read.
fn vanished(e: &BackupError) -> bool {
    matches!(e, BackupError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// The bases (whole images) in `listing`, oldest first, with their times.
pub(crate) fn bases(listing: &Listing) -> BTreeMap<u64, SystemTime> {
    listing
        .keys()
        .filter_map(|&(_, n)| bases_at(listing, n).first().map(|(_, h)| (n, h.time())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(page_count: u32) -> format::Object {
        format::test_delta(page_count, &[1, 9])
    }

    #[test]
    fn restorable_syncs_are_named_as_runs() {
        let at = |n| SyncInfo {
            number: n,
            time: SystemTime::UNIX_EPOCH,
        };
        let syncs: Vec<SyncInfo> = [1, 3, 4, 5, 8].into_iter().map(at).collect();
        assert_eq!(ranges(&syncs), "1, 3 to 5, 8");
        assert_eq!(ranges(&[]), "");
    }

    /// A delta with valid checksums but a forged page count is refused before the image is
    /// resized to it (it aborted the process on a failed 16 TiB allocation).
    #[test]
    fn a_forged_page_count_is_refused_before_any_allocation() {
        assert!(
            grows_only_by_its_pages(4, &delta(9)).is_ok(),
            "grows to its page 9"
        );
        assert!(grows_only_by_its_pages(20, &delta(12)).is_ok(), "shrinks");
        let err = grows_only_by_its_pages(4, &delta(u32::MAX)).unwrap_err();
        assert!(err.contains("page count 4294967295"), "{err}");
        assert!(
            grows_only_by_its_pages(4, &delta(10)).is_err(),
            "one past its pages"
        );
    }
}
