//! `save_now` (and a replica's `sync_now`): each caller takes a ticket and waits; the thread
//! answers every ticket handed out before its save began with that save's result.

use std::sync::{Condvar, MutexGuard};

use crate::error::BackupError;

#[derive(Debug, Default)]
pub(crate) struct Tickets {
    /// Tickets handed out, and answered so far.
    requested: u64,
    answered: u64,
    /// Every ticket up to this one was answered by a success.
    answered_ok: u64,
    /// The error of the last failed answer.
    last_error: Option<BackupError>,
    /// The thread has ended (stopped, or died): nobody will answer new tickets.
    pub(crate) gone: bool,
}

impl Tickets {
    /// A new ticket (the caller wakes the thread).
    pub(crate) fn take(&mut self) -> u64 {
        self.requested += 1;
        self.requested
    }

    /// The last ticket handed out: a save starting now answers every ticket up to it.
    pub(crate) fn requested(&self) -> u64 {
        self.requested
    }

    /// Whether a ticket up to `ticket` is still unanswered.
    pub(crate) fn waiting(&self, ticket: u64) -> bool {
        ticket > self.answered
    }

    /// The result of the save that answered `ticket`, once there is one.
    pub(crate) fn answer(&self, ticket: u64) -> Option<Result<(), BackupError>> {
        (self.answered >= ticket).then(|| match &self.last_error {
            Some(e) if self.answered_ok < ticket => Err(e.clone()),
            _ => Ok(()),
        })
    }

    /// Answers every ticket up to `tickets` with `result`.
    pub(crate) fn settle(&mut self, tickets: u64, result: &Result<(), BackupError>) {
        self.answered = self.answered.max(tickets);
        match result {
            Ok(()) => self.answered_ok = self.answered_ok.max(tickets),
            Err(e) => self.last_error = Some(e.clone()),
        }
    }
}

/// Waits on `answered` for the answer to `ticket` in the state behind `guard`; `None` when
/// the thread ended without answering.
pub(crate) fn wait<S>(
    mut guard: MutexGuard<'_, S>,
    answered: &Condvar,
    ticket: u64,
    tickets: impl Fn(&S) -> &Tickets,
) -> Option<Result<(), BackupError>> {
    loop {
        if let Some(answer) = tickets(&guard).answer(ticket) {
            return Some(answer);
        }
        if tickets(&guard).gone {
            return None;
        }
        guard = answered.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}
