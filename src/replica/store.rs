//! Blocking calls into an `ObjectStore`, driven by a current-thread runtime of our own. A
//! caller already inside a Tokio runtime (an async task, `spawn_blocking`) gets its call run
//! on a scoped thread, so no runtime is ever started within another.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use super::format::{self, Header, HEADER_LEN};
use super::source::object_label;
use crate::error::{BackupError, Operation};

/// A store, the prefix a replica's objects live under, and a runtime to drive it.
pub(crate) struct Store {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    op: Operation,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which Tokio refuses inside an async task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Listings made at most when objects vanish while they are read (see [`Store::list`]): a
/// replica's retention deletes, at most, what lies before its newest image, so a listing
/// a moment later is whole unless the replica syncs faster than a listing takes.
pub(crate) const LISTINGS: u32 = 10;

/// Header reads in flight at once while listing.
const READS_AT_ONCE: usize = 16;

/// Reads the first [`HEADER_LEN`] bytes of `location`.
async fn read_header(
    store: Arc<dyn ObjectStore>,
    location: Path,
) -> (Path, object_store::Result<bytes::Bytes>) {
    let answer = store.get_range(&location, 0..HEADER_LEN as u64).await;
    (location, answer)
}

/// An object as fetched: its bytes, or the open file of a store that keeps objects as files
/// on this machine, with its length.
pub(crate) enum Fetched {
    Bytes(bytes::Bytes),
    File(std::fs::File, u64),
}

/// Gets `location` whole: as its file when the store answers with one.
async fn fetch(store: Arc<dyn ObjectStore>, location: Path) -> object_store::Result<Fetched> {
    let got = store.get(&location).await?;
    let whole = got.range == (0..got.meta.size);
    match got.payload {
        GetResultPayload::File(file, _) if whole => Ok(Fetched::File(file, got.meta.size)),
        payload => {
            let got = object_store::GetResult { payload, ..got };
            got.bytes().await.map(Fetched::Bytes)
        }
    }
}

/// Where an object of sync `n` lives: `syncs/` holds the sync objects, `snapshots/` the
/// images compaction writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Folder {
    Syncs,
    Snapshots,
}

impl Folder {
    fn name(self) -> &'static str {
        match self {
            Folder::Syncs => "syncs",
            Folder::Snapshots => "snapshots",
        }
    }
}

/// What a listing found: for each folder, the sync numbers and the object's header (or why
/// it could not be read).
pub(crate) type Listing = BTreeMap<(Folder, u64), Result<Header, String>>;

/// The result of a create-only PUT.
pub(crate) enum Created {
    Done,
    /// The name was taken: another replica (or an earlier try of ours) wrote it.
    Taken,
}

impl Store {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        op: Operation,
    ) -> Result<Store, BackupError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackupError::init(op, e))?;
        Ok(Store {
            store,
            prefix,
            runtime: Some(runtime),
            op,
        })
    }

    pub(crate) fn location(&self, folder: Folder, sync: u64) -> Path {
        self.prefix
            .clone()
            .join(folder.name())
            .join(format!("{sync:020}.dsbr"))
    }

    fn block_on<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("a runtime until dropped");
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(future);
        }
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    pub(crate) fn error(
        &self,
        location: &Path,
        action: &'static str,
        e: object_store::Error,
    ) -> BackupError {
        let kind = match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::Other,
        };
        BackupError::io(
            self.op,
            &object_label(location),
            action,
            io::Error::new(kind, e),
        )
    }

    /// Writes `bytes` at `location` unless an object is there already.
    pub(crate) fn create(
        &self,
        location: &Path,
        bytes: PutPayload,
    ) -> Result<Created, BackupError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self.store.put_opts(location, bytes, options);
        match self.block_on(put) {
            Ok(_) => Ok(Created::Done),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Taken),
            Err(e) => Err(self.error(location, "put", e)),
        }
    }

    /// `get` of every location at once (a restore's chain), in the order given, as files
    /// when the store keeps them on this machine.
    pub(crate) fn get_all(&self, locations: &[Path]) -> Vec<Result<Fetched, BackupError>> {
        let fetch = async {
            let mut set = tokio::task::JoinSet::new();
            for (i, location) in locations.iter().enumerate() {
                let (store, location) = (Arc::clone(&self.store), location.clone());
                set.spawn(async move { (i, fetch(store, location).await) });
            }
            let mut out: Vec<Option<object_store::Result<Fetched>>> =
                (0..locations.len()).map(|_| None).collect();
            while let Some(joined) = set.join_next().await {
                let (i, answer) =
                    joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                out[i] = Some(answer);
            }
            out
        };
        self.block_on(fetch)
            .into_iter()
            .zip(locations)
            .map(|(answer, location)| {
                answer
                    .expect("every task answered")
                    .map_err(|e| self.error(location, "get", e))
            })
            .collect()
    }

    pub(crate) fn delete(&self, location: &Path) -> Result<(), BackupError> {
        match self.block_on(self.store.delete(location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(location, "delete", e)),
        }
    }

    /// The header of the object at `location`: its first bytes only.
    pub(crate) fn header(&self, location: &Path) -> Result<Result<Header, String>, BackupError> {
        let read = read_header(Arc::clone(&self.store), location.clone());
        let (location, answer) = self.block_on(read);
        self.judge(&location, answer)
    }

    /// A header read's answer: a store failure is an error; a short or damaged object is
    /// an unusable header.
    fn judge(
        &self,
        location: &Path,
        answer: object_store::Result<bytes::Bytes>,
    ) -> Result<Result<Header, String>, BackupError> {
        match answer {
            Ok(bytes) => Ok(Header::parse(&bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(Err("missing".into())),
            // A store may refuse a range past the end of a short object.
            Err(e @ object_store::Error::Generic { .. })
            | Err(e @ object_store::Error::NotSupported { .. }) => {
                Ok(Err(format!("unreadable header: {e}")))
            }
            Err(e) => Err(self.error(location, "get", e)),
        }
    }

    /// Every object under the prefix with a name of ours, and its header. Other names are
    /// ignored. Objects deleted between the listing and the reads of their headers (by a
    /// replica's retention) are left out, and the store is listed again to see what was
    /// written meanwhile, a few times at most.
    pub(crate) fn list(&self) -> Result<Listing, BackupError> {
        let mut tries = 1;
        loop {
            let (listing, vanished) = self.list_once()?;
            if !vanished || tries == LISTINGS {
                return Ok(listing);
            }
            tries += 1;
        }
    }

    /// One listing, and whether any object listed was gone when its header was read.
    fn list_once(&self) -> Result<(Listing, bool), BackupError> {
        let mut names = Vec::new();
        for folder in [Folder::Syncs, Folder::Snapshots] {
            let dir = self.prefix.clone().join(folder.name());
            let listed = self
                .block_on(self.store.list_with_delimiter(Some(&dir)))
                .map_err(|e| self.error(&dir, "list", e))?;
            for meta in listed.objects {
                let Some(name) = meta.location.filename() else {
                    continue;
                };
                let Some(n) = name.strip_suffix(".dsbr").filter(|n| n.len() == 20) else {
                    continue;
                };
                if let Ok(sync) = n.parse::<u64>() {
                    names.push((folder, sync, meta.location, meta.size));
                }
            }
        }
        // The headers, a few requests at a time: a listing is one round trip per object.
        let store = Arc::clone(&self.store);
        // An object shorter than a header is not read: it cannot be used, and a FIFO (which
        // a folder may hold under any name, and which lists as 0 bytes) would never answer.
        let locations: Vec<Path> = names
            .iter()
            .filter(|(.., size)| *size >= HEADER_LEN as u64)
            .map(|(_, _, l, _)| l.clone())
            .collect();
        let mut answers: std::collections::HashMap<Path, _> = self.block_on(async move {
            let mut pending = locations.into_iter();
            let mut running = tokio::task::JoinSet::new();
            let mut done = Vec::new();
            loop {
                while running.len() < READS_AT_ONCE {
                    let Some(location) = pending.next() else {
                        break;
                    };
                    running.spawn(read_header(Arc::clone(&store), location));
                }
                match running.join_next().await {
                    Some(answer) => done.push(answer.expect("a header read panicked")),
                    None => break,
                }
            }
            done.into_iter().collect()
        });
        let mut found = Listing::new();
        let mut vanished = false;
        for (folder, sync, location, size) in names {
            if size < HEADER_LEN as u64 {
                let short = format!("truncated: {size} bytes, shorter than a header");
                found.insert((folder, sync), Err(short));
                continue;
            }
            let answer = answers.remove(&location).expect("every name was read");
            if matches!(answer, Err(object_store::Error::NotFound { .. })) {
                vanished = true;
                continue;
            }
            let header = self.judge(&location, answer)?.and_then(|h| {
                let kind_ok = folder == Folder::Syncs || h.kind == format::Kind::Snapshot;
                match (h.sync == sync, kind_ok) {
                    (true, true) => Ok(h),
                    _ => Err(format!("its header says sync {} ({:?})", h.sync, h.kind)),
                }
            });
            found.insert((folder, sync), header);
        }
        Ok((found, vanished))
    }
}
