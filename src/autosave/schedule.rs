//! When the next save is due: a pure clock calculation, so it can be tested without threads.

use std::time::{Duration, Instant};

/// The longest pause between two looks at the database header.
const MAX_POLL: Duration = Duration::from_millis(50);
/// The shortest: a look copies 100 bytes and takes no SQLite lock.
const MIN_POLL: Duration = Duration::from_millis(1);
/// Longer durations (`Duration::MAX` for "never") count as this, so no clock sum overflows.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `t + d`, with `d` capped at [`NEVER`].
fn after(t: Instant, d: Duration) -> Instant {
    t + d.min(NEVER)
}

/// Unsaved changes, as far as polling can tell.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// No later than the first unsaved commit: the last look that saw nothing new.
    since: Instant,
    /// The last look that saw a new commit.
    last: Instant,
}

/// The database header at the last look, and when that look was: every commit changes the
/// header (its change counter), so a different one is a commit since.
#[derive(Debug)]
pub(crate) struct Watch {
    version: [u8; 100],
    looked_at: Instant,
}

impl Watch {
    /// Starts from `header` read now (`None`: unreadable, counted as a change later).
    pub(crate) fn new(header: Option<[u8; 100]>) -> Self {
        Watch {
            version: header.unwrap_or([0; 100]),
            looked_at: Instant::now(),
        }
    }

    /// Tells `schedule` about a commit since the last look, from `header` read now. Returns
    /// true when it could not be read: a change cannot be ruled out.
    pub(crate) fn look(&mut self, header: Option<[u8; 100]>, schedule: &mut Schedule) -> bool {
        let now = Instant::now();
        let previous = std::mem::replace(&mut self.looked_at, now);
        match header {
            Some(v) if v != self.version => {
                self.version = v;
                schedule.changed(previous, now);
                false
            }
            Some(_) => false,
            None => true,
        }
    }

    /// A sync read `header`: later looks compare with it.
    #[cfg(feature = "replica")]
    pub(crate) fn saw(&mut self, header: [u8; 100]) {
        self.version = header;
    }

    pub(crate) fn looked_at(&self) -> Instant {
        self.looked_at
    }
}

#[derive(Debug)]
pub(crate) struct Schedule {
    every: Duration,
    quiet: Duration,
    poll: Duration,
    pending: Option<Pending>,
    /// After a failed save, the next try waits for this moment or a new change.
    retry_at: Option<Instant>,
    /// Failed saves since the last one that succeeded.
    failures: u32,
}

impl Schedule {
    pub(crate) fn new(every: Duration, quiet: Duration) -> Self {
        // Fine enough that `quiet` is measured to a quarter and `every` is kept.
        let poll = (quiet.min(every) / 4).clamp(MIN_POLL, MAX_POLL);
        Schedule {
            every,
            quiet,
            poll,
            pending: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// Failed saves since the last one that succeeded: how many retries the next save makes.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A look at `now` found a commit made after the previous look, at `previous`.
    pub(crate) fn changed(&mut self, previous: Instant, now: Instant) {
        let since = self.pending.map_or(previous, |p| p.since);
        self.pending = Some(Pending { since, last: now });
        self.retry_at = None;
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// True when a save should start now.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.due_at().is_some_and(|at| now >= at)
    }

    /// When the pending changes must be saved: after `quiet` without commits, but no later
    /// than `every` after the first; after a failure, not before the retry.
    fn due_at(&self) -> Option<Instant> {
        let p = self.pending?;
        let at = after(p.last, self.quiet).min(after(p.since, self.every));
        Some(self.retry_at.map_or(at, |retry| at.max(retry)))
    }

    /// How long to sleep before the next look (or the save that is due).
    pub(crate) fn sleep(&self, now: Instant) -> Duration {
        let until_due = self
            .due_at()
            .map_or(self.poll, |at| at.saturating_duration_since(now));
        until_due.min(self.poll)
    }

    /// A save that started after the look at which everything pending was seen succeeded.
    pub(crate) fn saved(&mut self) {
        self.pending = None;
        self.retry_at = None;
        self.failures = 0;
    }

    /// A save failed at `now`: the changes stay pending, and the next try comes after a new
    /// change has been quiet, or `every` from now, so a lasting failure is retried (and
    /// reported) at most about once per `every` under a steady stream of commits.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.pending = Some(Pending {
            since: now,
            last: now,
        });
        self.retry_at = Some(after(now, self.every));
        self.failures = self.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_saved_once_it_has_been_quiet() {
        let t0 = Instant::now();
        let mut s = Schedule::new(1000 * MS, 200 * MS);
        s.changed(t0, t0 + 10 * MS);
        s.changed(t0 + 10 * MS, t0 + 100 * MS);
        assert!(!s.is_due(t0 + 299 * MS));
        assert!(s.is_due(t0 + 300 * MS));
    }

    #[test]
    fn constant_commits_are_saved_every_period_counted_from_the_first() {
        let t0 = Instant::now();
        let mut s = Schedule::new(1000 * MS, 200 * MS);
        let mut t = t0;
        while t < t0 + 990 * MS {
            s.changed(t, t + 10 * MS);
            t += 10 * MS;
            assert!(!s.is_due(t), "due too early at {:?}", t - t0);
        }
        s.changed(t, t + MS);
        assert!(s.is_due(t0 + 1000 * MS));
    }

    #[test]
    fn nothing_pending_is_never_due_and_polls_at_the_poll_interval() {
        let t0 = Instant::now();
        let s = Schedule::new(1000 * MS, 200 * MS);
        assert!(!s.is_due(t0 + 3600 * 1000 * MS));
        assert_eq!(s.sleep(t0), 50 * MS);
    }

    #[test]
    fn a_failure_waits_a_period_unless_a_new_change_comes() {
        let t0 = Instant::now();
        let mut s = Schedule::new(1000 * MS, 100 * MS);
        s.changed(t0, t0 + MS);
        assert!(s.is_due(t0 + 101 * MS));
        s.failed(t0 + 102 * MS);
        assert!(!s.is_due(t0 + 500 * MS));
        assert!(s.is_due(t0 + 1102 * MS));
        s.changed(t0 + 500 * MS, t0 + 501 * MS);
        assert!(!s.is_due(t0 + 600 * MS));
        assert!(s.is_due(t0 + 601 * MS));
        // Commits that never pause: one try per period.
        let mut s = Schedule::new(1000 * MS, 100 * MS);
        s.failed(t0);
        for i in 1..99 {
            s.changed(t0 + (i * 10 - 10) * MS, t0 + i * 10 * MS);
            assert!(!s.is_due(t0 + i * 10 * MS));
        }
    }

    #[test]
    fn durations_meaning_never_do_not_overflow() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::MAX, Duration::MAX);
        s.changed(t0, t0);
        assert!(!s.is_due(t0 + 3600 * 1000 * MS));
        assert_eq!(s.sleep(t0), 50 * MS);
        s.failed(t0);
        assert!(!s.is_due(t0 + 3600 * 1000 * MS));
    }

    #[test]
    fn sleep_never_oversleeps_a_due_save() {
        let t0 = Instant::now();
        let mut s = Schedule::new(40 * MS, 8 * MS);
        assert_eq!(s.sleep(t0), 2 * MS);
        s.changed(t0, t0);
        assert_eq!(s.sleep(t0 + 7 * MS), MS);
    }
}
