//! What the crate tells a `tracing` subscriber: one span per operation, whose fields are
//! recorded as its decisions are made, and events at those decisions (docs/design.md,
//! "Observability"). Nothing here runs per page.

use std::fmt::Display;
use std::time::Instant;

use tracing::Span;

/// True when a `tracing` subscriber is installed for this thread (global or scoped): the
/// few lines the crate used to print then go to it instead of standard error.
pub(crate) fn listening() -> bool {
    !tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>())
}

/// Runs `f` inside `span`, then records `elapsed_ms` and, on failure, `error`, and ends with
/// a debug event that carries them (for subscribers that print events, not span closes).
pub(crate) fn in_span<T, E: Display>(span: Span, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let _entered = span.enter();
    let started = Instant::now();
    let result = f();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    span.record("elapsed_ms", elapsed_ms);
    match &result {
        Ok(_) => tracing::debug!(elapsed_ms, "done"),
        Err(e) => {
            span.record("error", tracing::field::display(e));
            tracing::debug!(elapsed_ms, error = %e, "failed");
        }
    }
    result
}

/// Records `value` as `field` of the operation's span (a no-op where the current span has no
/// such field, or nobody listens).
pub(crate) fn record(field: &str, value: impl tracing::Value) {
    Span::current().record(field, value);
}
