//! A store wrapper with switches, for what a real store does at the worst moment: wipes
//! before a PUT, PUTs that fail or whose answer is lost, reads that fail, and retention
//! running between a restore's listing and its reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Objects and their bytes.
pub type Objects = Vec<(Path, Vec<u8>)>;

/// On a read of `trigger` after `reads_before` others: `before` deleted and `after` put,
/// as a replica's retention leaves a store after a newer image.
pub struct SwapOnRead {
    pub trigger: Path,
    pub reads_before: usize,
    pub before: Vec<Path>,
    pub after: Objects,
}

pub struct Hooked {
    pub inner: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub fail_reads: AtomicBool,
    /// Before the next PUT of a `syncs/` object: wipe the prefix.
    pub wipe_before_put: AtomicBool,
    /// The next PUT lands but answers an error.
    pub lose_put_answer: AtomicBool,
    /// PUTs of `syncs/` objects fail without landing.
    pub fail_puts: AtomicBool,
    pub swap_on_read: Mutex<Option<SwapOnRead>>,
    reads_of_trigger: AtomicUsize,
}

impl Hooked {
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &Path) -> Arc<Self> {
        Arc::new(Hooked {
            inner,
            prefix: prefix.clone(),
            fail_reads: false.into(),
            wipe_before_put: false.into(),
            lose_put_answer: false.into(),
            fail_puts: false.into(),
            swap_on_read: Mutex::new(None),
            reads_of_trigger: 0.into(),
        })
    }

    async fn wipe(&self) {
        for dir in ["syncs", "snapshots"] {
            let listed = self
                .inner
                .list_with_delimiter(Some(&self.prefix.clone().join(dir)))
                .await;
            for m in listed.map(|l| l.objects).unwrap_or_default() {
                let _ = self.inner.delete(&m.location).await;
            }
        }
    }

    /// The swap, if this read of `location` is the one it waits for.
    fn swap_now(&self, location: &Path) -> Option<SwapOnRead> {
        let mut swap = self.swap_on_read.lock().unwrap();
        let due = swap.as_ref().is_some_and(|s| {
            &s.trigger == location
                && self.reads_of_trigger.fetch_add(1, Ordering::SeqCst) >= s.reads_before
        });
        due.then(|| swap.take()).flatten()
    }
}

impl std::fmt::Display for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked({})", self.inner)
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked")
    }
}

fn generic(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "Hooked",
        source: what.to_string().into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for Hooked {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let sync = location.as_ref().contains("/syncs/");
        if sync && self.wipe_before_put.swap(false, Ordering::SeqCst) {
            self.wipe().await;
        }
        if sync && self.fail_puts.load(Ordering::SeqCst) {
            return Err(generic("put fails"));
        }
        let put = self.inner.put_opts(location, payload, opts).await;
        if put.is_ok() && self.lose_put_answer.swap(false, Ordering::SeqCst) {
            return Err(generic("answer lost"));
        }
        put
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(generic("reads fail"));
        }
        if let Some(swap) = self.swap_now(location) {
            for (at, bytes) in swap.after {
                self.inner.put(&at, bytes.into()).await?;
            }
            for at in &swap.before {
                self.inner.delete(at).await?;
            }
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures_core::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures_core::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures_core::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
    {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
