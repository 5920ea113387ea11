//! Replicas in object storage: the pool's database shipped off the machine, page by page,
//! with point-in-time restore (docs/replica.md).
//!
//! A thread of its own looks at the database header through a private connection, like
//! [`Autosave`](crate::Autosave), and after each quiet period reads, under one read
//! transaction, the pages the write record says changed since its last upload, and PUTs
//! them as one object. Its record is its own: saves and autosaves never clear it.

mod format;
mod image;
mod options;
mod restore;
mod source;
mod store;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

/// Compaction also starts once the deltas since the last image add up to more than this
/// fraction of it: a restore then reads at most 1 + 1/4 images' worth.
const COMPACT_FRACTION: u64 = 4;

pub use options::{Compression, ReplicaOptions, Retain};
pub(crate) use restore::restore_from_replica;
use source::{object_label, Read, Schedule, Source, Uploaded, Watch};
use store::{Created, Folder, Store};

use crate::autosave::tickets::{self, Tickets};
use crate::error::{BackupError, Operation};
use crate::pool::SingletonManager;

const OP: Operation = Operation::Replica;

/// Which sync [`restore_from_replica`](crate::BackupExt::restore_from_replica) restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreTarget {
    /// The newest sync in the store.
    Latest,
    /// The last sync made at or before this time.
    At(SystemTime),
    /// The sync with this number.
    Sync(u64),
}

/// The sync a restore loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreInfo {
    /// Its number.
    pub sync: u64,
    /// When it read the database.
    pub time: SystemTime,
}

/// A sync that can be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncInfo {
    /// Its number: syncs are numbered 1, 2, 3... under one prefix, across replicas.
    pub number: u64,
    /// When it read the database.
    pub time: SystemTime,
}

/// The syncs under `prefix` that can be restored, oldest first: those whose objects are all
/// there with valid headers (bodies are checked by the restore itself). After
/// [`Replica::sync_now`] returns, the last entry is the sync it made (or an earlier one
/// holding the same content, when nothing changed).
///
/// # Errors
/// [`BackupError::Io`] naming the folder or object when the store cannot be listed or read.
pub fn list_syncs(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
) -> Result<Vec<SyncInfo>, BackupError> {
    restore::list_syncs(store, prefix)
}

/// Ships a [`SingletonManager`] pool's database to object storage whenever it changes, on a
/// thread of its own: a whole image first, then only the pages each sync changed.
///
/// Every object is written once with a create-only PUT and never modified, so a sync is in
/// the store completely or not at all, whatever happens to this process. Restore with
/// [`BackupExt::restore_from_replica`](crate::BackupExt::restore_from_replica), in this
/// process or any other. It can run beside an [`Autosave`](crate::Autosave) of the same pool.
///
/// Dropping it is [`stop`](Replica::stop) with the error, if any, given to
/// [`on_error`](ReplicaOptions::on_error).
///
/// # Two replicas, one prefix
/// Sync numbers are names: when another replica has written the number this one is about
/// to write, this one fails with [`BackupError::InvalidInput`] naming the prefix, and stops
/// syncing (every later call returns that error). The store must support create-only PUTs
/// (`PutMode::Create`): `InMemory`, `LocalFileSystem`, S3, GCS and Azure do.
///
/// ```
/// use std::sync::Arc;
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::{memory_pool, list_syncs, BackupExt, Replica, ReplicaOptions, RestoreTarget};
/// use object_store::{memory::InMemory, path::Path, ObjectStore};
///
/// let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
/// let pool = memory_pool()?;
/// diesel::sql_query("CREATE TABLE notes(body TEXT)").execute(&mut pool.get()?)?;
/// let replica = Replica::start(&pool, store.clone(), Path::from("notes"), ReplicaOptions::default())?;
/// diesel::sql_query("INSERT INTO notes VALUES ('hello')").execute(&mut pool.get()?)?;
/// replica.sync_now()?; // the insert is in the store
/// assert_eq!(replica.syncs(), 2);
/// replica.stop()?;
///
/// let elsewhere = memory_pool()?;
/// let info = elsewhere.get()?.restore_from_replica(store.clone(), &Path::from("notes"), RestoreTarget::Latest)?;
/// assert_eq!(info.sync, 2);
/// assert_eq!(list_syncs(store, &Path::from("notes"))?.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Replica {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), BackupError>>>,
}

impl Replica {
    /// Uploads a whole image of the pool's database as the next sync under `prefix` (1 in
    /// an empty prefix), then starts the thread that keeps the store up to date.
    ///
    /// Like [`Autosave::start`](crate::Autosave::start), it borrows one pooled connection
    /// once, to find the database, and uses a private connection from then on. The store is
    /// driven on a runtime of the replica's own: no Tokio runtime is needed, and calling
    /// from inside one works too.
    ///
    /// # Errors
    /// [`BackupError::Init`] if no connection could be borrowed or the thread not started;
    /// [`BackupError::Io`] naming the object when the store cannot be listed or written;
    /// [`BackupError::InvalidInput`] if another replica took the sync number meanwhile.
    pub fn start(
        pool: &r2d2::Pool<SingletonManager>,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        options: ReplicaOptions,
    ) -> Result<Replica, BackupError> {
        Self::run(Source::open(pool)?, store, prefix, options)
    }

    /// [`start`](Self::start) for a [`MemoryDatabase`](crate::MemoryDatabase) and every
    /// connection to it, whatever pool (or none) they come from.
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{MemoryDatabase, Replica, ReplicaOptions};
    /// use object_store::{memory::InMemory, path::Path};
    ///
    /// let db = MemoryDatabase::new()?;
    /// let store = Arc::new(InMemory::new());
    /// let replica = Replica::start_with_database(&db, store, Path::from("doc"), ReplicaOptions::default())?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut db.connect()?)?;
    /// replica.sync_now()?;
    /// assert_eq!(replica.syncs(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_with_database(
        database: &crate::MemoryDatabase,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        options: ReplicaOptions,
    ) -> Result<Replica, BackupError> {
        Self::run(Source::open_database(database)?, store, prefix, options)
    }

    /// Uploads the first sync from `source`, then starts the thread.
    fn run(
        source: Source,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        options: ReplicaOptions,
    ) -> Result<Replica, BackupError> {
        let store = Store::new(store, prefix, OP)?;
        let listing = store.list()?;
        // Saturating: a name at u64::MAX (garbage) makes the first upload's create fail, not
        // this addition overflow.
        let next = listing
            .keys()
            .map(|&(_, n)| n.saturating_add(1))
            .max()
            .unwrap_or(1);
        // Times only grow along a prefix's history, whatever the clock does.
        let last_time_ns = listing
            .values()
            .filter_map(|h| h.as_ref().ok().map(|h| h.time_ns))
            .max()
            .unwrap_or(0);
        let mut worker = Worker {
            watch: Watch::new(source.header()),
            source,
            store,
            options,
            generation: generation(),
            next,
            last: None,
            last_time_ns,
            last_header: [0; 100],
            base: None,
            since_base: 0,
            bytes_since_base: 0,
            base_bytes: 0,
            uncertain: None,
            conflict: None,
        };
        let shared = Arc::new(Shared::default());
        worker.sync(&shared)?;
        let thread = std::thread::Builder::new()
            .name("dsb-replica".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let _exit = shared.on_exit();
                    worker.run(&shared)
                }
            })
            .map_err(|e| BackupError::init(OP, e))?;
        Ok(Replica {
            shared,
            thread: Some(thread),
        })
    }

    /// Syncs now, whatever the schedule, and returns once a sync holding every commit made
    /// before the call is in the store. When nothing was committed since the last
    /// successful sync, it returns at once.
    ///
    /// # Errors
    /// The error of the sync that should have held the commits (not also given to
    /// `on_error`); [`BackupError::InvalidInput`] on the replica's own thread (from
    /// `on_error`), where it would wait for itself; [`BackupError::Init`] if the thread
    /// ended.
    pub fn sync_now(&self) -> Result<(), BackupError> {
        if self.on_own_thread() {
            return Err(BackupError::InvalidInput {
                op: OP,
                path: self.shared.prefix(),
                reason: "sync_now was called on the replica's own thread (from on_error)".into(),
            });
        }
        let ticket = self.shared.ask();
        self.shared
            .wait(ticket)
            .unwrap_or_else(|| Err(thread_ended()))
    }

    /// Completed syncs since [`start`](Self::start), its own included.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Syncs what is pending, stops the thread, and returns the error of that last sync if
    /// it failed. Nothing is uploaded after it returns.
    pub fn stop(mut self) -> Result<(), BackupError> {
        self.finish(true)
    }

    fn on_own_thread(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id())
    }

    fn finish(&mut self, returned: bool) -> Result<(), BackupError> {
        if self.on_own_thread() {
            self.shared.request_stop(false);
            return Ok(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shared.request_stop(returned);
        thread.join().unwrap_or_else(|_| Err(thread_ended()))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.finish(false);
    }
}

impl fmt::Debug for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("prefix", &self.shared.prefix())
            .field("syncs", &self.syncs())
            .finish_non_exhaustive()
    }
}

fn thread_ended() -> BackupError {
    BackupError::init(OP, "the replica thread ended unexpectedly (it panicked)")
}

/// A random id for this replica's objects.
fn generation() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What the handle and the thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    answered: Condvar,
    syncs: AtomicU64,
}

#[derive(Default)]
struct State {
    prefix: std::path::PathBuf,
    /// `sync_now` tickets.
    tickets: Tickets,
    /// Stop asked: `true` when `stop()` returns the last error, `false` for `on_error`.
    stop: Option<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prefix(&self) -> std::path::PathBuf {
        self.lock().prefix.clone()
    }

    fn ask(&self) -> u64 {
        let ticket = self.lock().tickets.take();
        self.wake.notify_all();
        ticket
    }

    fn wait(&self, ticket: u64) -> Option<Result<(), BackupError>> {
        tickets::wait(self.lock(), &self.answered, ticket, |s| &s.tickets)
    }

    fn answer(&self, tickets: u64, result: &Result<(), BackupError>) {
        self.lock().tickets.settle(tickets, result);
        self.answered.notify_all();
    }

    fn request_stop(&self, returned: bool) {
        self.lock().stop.get_or_insert(returned);
        self.wake.notify_all();
    }

    fn on_exit(&self) -> impl Drop + '_ {
        struct Exit<'a>(&'a Shared);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                self.0.lock().tickets.gone = true;
                self.0.answered.notify_all();
            }
        }
        Exit(self)
    }
}

/// A PUT whose fate is unknown (it failed, but the store may have kept it or may still
/// do so). The same bytes are sent again before anything else, so that whichever copy
/// lands, the store holds what the replica believes.
#[derive(Debug, Clone)]
struct Attempt {
    sync: u64,
    uploaded: Uploaded,
    time_ns: u64,
    header: [u8; 100],
    full: bool,
    object: PutPayload,
}

/// The thread's own state.
struct Worker {
    source: Source,
    store: Store,
    options: ReplicaOptions,
    generation: u64,
    /// The number the next sync takes.
    next: u64,
    /// What the last sync in the store holds (`None`: the next one is a whole image).
    last: Option<Uploaded>,
    last_time_ns: u64,
    /// The header the last sync holds.
    last_header: [u8; 100],
    /// The whole image the chain of deltas starts from: its number and object.
    base: Option<(u64, Path)>,
    /// Deltas, and their bytes, since the last whole image; that image's bytes.
    since_base: u32,
    bytes_since_base: u64,
    base_bytes: u64,
    uncertain: Option<Attempt>,
    /// Another replica writes this prefix: nothing more is synced.
    conflict: Option<BackupError>,
    /// What the last look at the database header, or the last sync, saw.
    watch: Watch,
}

impl Worker {
    fn run(mut self, shared: &Shared) -> Result<(), BackupError> {
        let mut schedule = Schedule::new(self.options.every, self.options.quiet);
        loop {
            let (tickets, stop) = {
                let mut s = shared.lock();
                if s.stop.is_none() && !s.tickets.waiting(s.tickets.requested()) {
                    let sleep = schedule.sleep(Instant::now());
                    s = shared
                        .wake
                        .wait_timeout(s, sleep)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                (s.tickets.requested(), s.stop)
            };
            let unsure = self.watch.look(self.source.header(), &mut schedule);
            if let Some(returned) = stop {
                let result = if schedule.is_pending() || unsure {
                    self.scheduled(shared, &mut schedule)
                } else {
                    Ok(())
                };
                if returned {
                    return result;
                }
                if let Err(e) = &result {
                    self.report(e);
                }
                return Ok(());
            }
            let asked = shared.lock().tickets.waiting(tickets);
            if asked || schedule.is_due(Instant::now()) {
                let result = if asked && !schedule.is_pending() && !unsure {
                    Ok(())
                } else {
                    self.scheduled(shared, &mut schedule)
                };
                if asked {
                    shared.answer(tickets, &result);
                } else if let Err(e) = &result {
                    self.report(e);
                }
            }
        }
    }

    fn scheduled(&mut self, shared: &Shared, schedule: &mut Schedule) -> Result<(), BackupError> {
        let result = panic::catch_unwind(AssertUnwindSafe(|| self.sync(shared)))
            .unwrap_or_else(|_| Err(BackupError::init(OP, "a sync panicked")));
        match &result {
            Ok(()) => schedule.saved(),
            Err(_) => schedule.failed(Instant::now()),
        }
        result
    }

    fn report(&mut self, error: &BackupError) {
        let on_error = &mut self.options.on_error;
        let _ = panic::catch_unwind(AssertUnwindSafe(|| on_error(error)));
    }

    /// One sync of everything committed so far.
    fn sync(&mut self, shared: &Shared) -> Result<(), BackupError> {
        shared.lock().prefix = object_label(&self.store.prefix);
        if let Some(e) = &self.conflict {
            return Err(e.clone());
        }
        self.settle(shared)?;
        self.check_chain()?;
        let compact = self.last.is_some()
            && (self.since_base >= self.options.compact_after
                || self.bytes_since_base > self.base_bytes / COMPACT_FRACTION);
        let mut read = self.source.read(self.last, compact, self.options.timeout)?;
        self.watch.saw(read.header);
        // Every commit moves the change counter: the same header is the same content.
        let same =
            self.last.is_some_and(|l| l.pages == read.pages) && read.header == self.last_header;
        if same && !read.full {
            return Ok(());
        }
        let n = self.next;
        let time_ns = (read
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()) as u64)
            .max(self.last_time_ns + 1);
        let whole = read.full && read.changed.is_none();
        let generation = self.generation;
        let contents = |kind, numbers| format::Contents {
            kind,
            page_size: read.page_size,
            page_count: read.pages,
            sync: n,
            generation,
            time_ns,
            numbers,
        };
        let zstd = self.options.zstd_level();
        // A compaction read the whole database: its delta is the pages that changed, cut out
        // of that read, and the read itself becomes an image beside it (below).
        let object = match &read.changed {
            Some(changed) => {
                let delta = contents(format::Kind::Delta, changed);
                format::encode(&delta, &cut(&read, changed), zstd)
            }
            None => {
                let kind = match whole {
                    true => format::Kind::Snapshot,
                    false => format::Kind::Delta,
                };
                let object = std::mem::take(&mut read.object);
                format::encode_in_place(&contents(kind, &read.numbers), object, zstd)
            }
        };
        let attempt = Attempt {
            sync: n,
            uploaded: Uploaded {
                mark: read.mark,
                page_size: read.page_size,
                pages: read.pages,
            },
            time_ns,
            header: read.header,
            full: whole,
            object: object.into(),
        };
        self.put(shared, attempt)?;
        if read.changed.is_some() {
            let image = contents(format::Kind::Snapshot, &read.numbers);
            let image = format::encode_in_place(&image, std::mem::take(&mut read.object), zstd);
            let image_bytes = image.len() as u64;
            let location = self.store.location(Folder::Snapshots, n);
            match self.store.create(&location, image.into()) {
                Ok(_) => {
                    self.rebased(n, location, image_bytes);
                }
                Err(e) => self.report(&e),
            }
        }
        Ok(())
    }

    /// A delta goes only onto a chain that is still there: when the last sync's object or
    /// the image the chain starts from is gone (the store was wiped, or objects deleted, even
    /// while the last sync was being written), the next sync is a whole image; when another
    /// replica's object stands in their place, this one stops. Two header reads a sync.
    fn check_chain(&mut self) -> Result<(), BackupError> {
        let Some(last) = self.next.checked_sub(1).filter(|_| self.last.is_some()) else {
            return Ok(());
        };
        let mut chain = vec![(last, self.store.location(Folder::Syncs, last))];
        if let Some((n, image)) = self.base.clone().filter(|(_, image)| *image != chain[0].1) {
            chain.push((n, image));
        }
        for (n, location) in chain {
            match self.store.header(&location)? {
                Ok(h) if h.generation == self.generation => {}
                Ok(_) => return Err(self.conflicted(n)),
                Err(reason) => {
                    tracing::debug!(object = %location, %reason, "the chain is broken: a whole image follows");
                    self.last = None;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Records a sync that is in the store.
    #[allow(clippy::too_many_arguments)]
    fn done(
        &mut self,
        shared: &Shared,
        n: u64,
        uploaded: Uploaded,
        time_ns: u64,
        whole: bool,
        bytes: u64,
        header: [u8; 100],
    ) {
        self.uncertain = None;
        self.last_header = header;
        self.next = n.saturating_add(1);
        self.last = Some(uploaded);
        self.last_time_ns = time_ns;
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        if whole {
            let image = self.store.location(Folder::Syncs, n);
            self.rebased(n, image, bytes);
        } else {
            self.since_base += 1;
            self.bytes_since_base += bytes;
        }
    }

    /// A whole image (sync `n`, at `image`) was written: count from it, and drop what
    /// retention no longer keeps.
    fn rebased(&mut self, n: u64, image: Path, bytes: u64) {
        self.base = Some((n, image));
        self.since_base = 0;
        self.bytes_since_base = 0;
        self.base_bytes = bytes;
        if let Err(e) = self.retain() {
            self.report(&e);
        }
    }

    /// After a failed PUT: sends the same object again; found there already (the failed
    /// one landed after all), it is our last sync.
    fn settle(&mut self, shared: &Shared) -> Result<(), BackupError> {
        match self.uncertain.take() {
            Some(a) => self.put(shared, a),
            None => Ok(()),
        }
    }

    /// PUTs a sync object, create-only. A name taken by the very object (our earlier try
    /// landed) counts as done; by another, it is a conflict.
    fn put(&mut self, shared: &Shared, a: Attempt) -> Result<(), BackupError> {
        let location = self.store.location(Folder::Syncs, a.sync);
        let taken = match self.store.create(&location, a.object.clone()) {
            Ok(Created::Done) => false,
            Ok(Created::Taken) => true,
            Err(e) => {
                self.uncertain = Some(a);
                return Err(e);
            }
        };
        if taken {
            let ours = match self.store.header(&location) {
                Ok(h) => h.is_ok_and(|h| h.generation == self.generation && h.time_ns == a.time_ns),
                Err(e) => {
                    self.uncertain = Some(a);
                    return Err(e);
                }
            };
            if !ours {
                return Err(self.conflicted(a.sync));
            }
        }
        let bytes = a.object.content_length() as u64;
        self.done(
            shared, a.sync, a.uploaded, a.time_ns, a.full, bytes, a.header,
        );
        Ok(())
    }

    fn conflicted(&mut self, n: u64) -> BackupError {
        let e = BackupError::InvalidInput {
            op: OP,
            path: object_label(&self.store.prefix),
            reason: format!(
                "another replica wrote sync {n} under this prefix: two replicas must not share \
                 a prefix; this one stops syncing"
            ),
        };
        self.conflict = Some(e.clone());
        e
    }

    /// Deletes, oldest first, everything before the oldest whole image retention keeps.
    fn retain(&mut self) -> Result<(), BackupError> {
        let listing = self.store.list()?;
        let bases = restore::bases(&listing);
        let cut = match self.options.retain {
            Retain::Snapshots(k) => bases.keys().rev().nth(k.max(1) - 1).copied(),
            Retain::For(d) => {
                let horizon = SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH);
                bases
                    .iter()
                    .rev()
                    .find(|(_, &t)| t <= horizon)
                    .map(|(&n, _)| n)
            }
        };
        let Some(cut) = cut else {
            return Ok(());
        };
        let mut old: Vec<(u64, Folder)> = listing
            .keys()
            .filter(|&&(_, n)| n < cut)
            .map(|&(f, n)| (n, f))
            .collect();
        old.sort();
        for (n, folder) in old {
            self.store.delete(&self.store.location(folder, n))?;
        }
        Ok(())
    }
}

/// The pages `changed` cut out of a whole read.
fn cut(read: &Read, changed: &[u32]) -> Vec<u8> {
    let ps = read.page_size as usize;
    let pages = read.pages();
    let mut out = Vec::with_capacity(changed.len() * ps);
    for &p in changed {
        let at = (p as usize - 1) * ps;
        out.extend_from_slice(&pages[at..at + ps]);
    }
    out
}
