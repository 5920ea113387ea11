//! Running one backup call on tokio's blocking pool, cancelled through its `CancelToken` when
//! the future is dropped.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use diesel::{QueryResult, SqliteConnection};

use super::AsyncSqliteConnection;
use crate::{BackupError, BackupOptions, CancelToken, Operation};

/// What the future and the blocking task share: whether the future was dropped, and the
/// token of the call once its options are made.
#[derive(Default)]
struct Slot {
    dropped: bool,
    token: Option<CancelToken>,
}

/// diesel-async's future of the blocking task: `None` when it skipped a dropped call.
type TaskFuture<T> =
    Pin<Box<dyn Future<Output = QueryResult<Option<Result<T, BackupError>>>> + Send>>;

/// Runs `work` with the options `make` builds, on `conn`'s blocking task, once the future is
/// first polled (like an `async fn`). `named` names the call in the error of a task that
/// could not run.
pub(super) fn on_blocking_pool<'a, T, W>(
    conn: &'a mut AsyncSqliteConnection,
    named: (Operation, PathBuf),
    make: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    work: W,
) -> Cancelling<'a, T>
where
    T: Send + 'static,
    W: FnOnce(&mut SqliteConnection, BackupOptions<'static>) -> Result<T, BackupError>
        + Send
        + 'static,
{
    let slot = Arc::new(Mutex::new(Slot::default()));
    let shared = Arc::clone(&slot);
    let start = move || -> TaskFuture<T> {
        conn.spawn_blocking(move |inner| {
            let mut options = make();
            let token = token_of(&mut options);
            {
                let mut slot = lock(&shared);
                if slot.dropped {
                    // Dropped before the task ran: do nothing, but the options' token is
                    // cancelled as for a call dropped later.
                    token.cancel();
                    return Ok(None);
                }
                slot.token = Some(token);
            }
            Ok(Some(work(inner, options)))
        })
    };
    Cancelling {
        slot,
        named,
        done: false,
        start: Some(Box::new(start)),
        future: None,
    }
}

/// The options' cancel token, a fresh one installed if they have none. The one place that
/// reaches into `BackupOptions`.
fn token_of(options: &mut BackupOptions<'_>) -> CancelToken {
    options.cancel.get_or_insert_with(CancelToken::new).clone()
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The future of one call. Dropped before it is done, it cancels the call's token first,
/// then drops the task's future, which (diesel-async's `CancelWrapper`) waits for the
/// blocking task to end, so the connection is free again when the drop returns.
pub(super) struct Cancelling<'a, T: Send + 'static> {
    slot: Arc<Mutex<Slot>>,
    named: (Operation, PathBuf),
    done: bool,
    /// Spawns the task; taken on first poll.
    start: Option<Box<dyn FnOnce() -> TaskFuture<T> + Send + 'a>>,
    /// The task, once started.
    future: Option<TaskFuture<T>>,
}

impl<T: Send + 'static> Future for Cancelling<'_, T> {
    type Output = Result<T, BackupError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(start) = this.start.take() {
            this.future = Some(start());
        }
        let future = this.future.as_mut().expect("polled after completion");
        let result = std::task::ready!(future.as_mut().poll(cx));
        this.done = true;
        this.future = None;
        let (op, path) = this.named.clone();
        Poll::Ready(match result {
            Ok(Some(outcome)) => outcome,
            // Only a dropped future makes the task skip its work, and then nobody polls.
            Ok(None) => Err(BackupError::Cancelled { op, path }),
            // The runtime is shutting down, or the call panicked.
            Err(e) => Err(BackupError::init(op, e)),
        })
    }
}

impl<T: Send + 'static> Drop for Cancelling<'_, T> {
    fn drop(&mut self) {
        // Never polled: nothing ran. Done: nothing to cancel.
        let Some(future) = self.future.take() else {
            return;
        };
        {
            let mut slot = lock(&self.slot);
            slot.dropped = true;
            if let Some(token) = &slot.token {
                token.cancel();
            }
        }
        // diesel-async's wrapper waits with `block_in_place`, which panics on a current-thread
        // runtime. There the drop waits for the task itself, parking this thread: the task
        // runs on the blocking pool, not here, and ends at its next step now that its token
        // is cancelled (a task that never started resolves at once). Once the task is done,
        // its clone of the connection is gone too, which diesel-async's pools and transaction
        // checks need; the wrapper's own drop then has nothing to wait for.
        let current_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if current_thread {
            let _ = wait_here(future);
        } else {
            drop(future);
        }
    }
}

/// Polls `future` to its end on this thread, parking between wake-ups.
fn wait_here<F: Future + Unpin>(mut future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
