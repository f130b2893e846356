//! Group commit for the pipeline actors.
//!
//! An actor handles one message at a time, so while it commits one batch, new requests
//! queue up in its mailbox. The first request into an empty buffer sends the actor a
//! `Flush` message; because the mailbox is first-in first-out, every request that arrived
//! before that `Flush` is already buffered when it is handled, and goes into the same
//! transaction. Under load batches grow by themselves; when idle a request is written
//! at once.

use ractor::{ActorRef, Message, MessagingErr};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A pipeline actor's state that writes its requests in batches.
pub(crate) trait GroupCommit {
    type Item;

    fn batcher(&mut self) -> &mut Batcher<Self::Item>;

    /// Writes one batch. On failure the batch is requeued and the retry delay returned.
    fn flush_once(&mut self) -> impl Future<Output = Result<(), Duration>> + Send;
}

/// Handles a `Flush` message: writes one batch, then schedules the next flush — at once
/// when more requests wait, after the retry delay when the write failed.
pub(crate) async fn on_flush<S, M>(
    state: &mut S,
    myself: &ActorRef<M>,
    flush: fn() -> M,
) -> Result<(), MessagingErr<M>>
where
    S: GroupCommit,
    M: Message,
{
    if let Err(delay) = state.flush_once().await {
        myself.send_after(delay, flush);
    } else if state.batcher().needs_flush() {
        myself.send_message(flush())?;
    }
    Ok(())
}

/// Writes everything buffered, retrying failed writes until the deadline; returns whether
/// everything got written. What is left is reported, never silently dropped.
pub(crate) async fn flush_all<S: GroupCommit>(state: &mut S, deadline: Instant) -> bool {
    while !state.batcher().is_empty() {
        if let Err(delay) = state.flush_once().await {
            if Instant::now() + delay >= deadline {
                break;
            }
            tokio::time::sleep(delay).await;
        }
    }
    state.batcher().is_empty()
}

/// Requests waiting to be written, and whether a flush is already on its way.
pub(crate) struct Batcher<T> {
    pending: VecDeque<T>,
    flush_scheduled: bool,
    max_batch: usize,
    /// Most bytes (as `weight` counts them) in one batch; a request heavier than this
    /// still goes, alone.
    max_bytes: usize,
    weight: fn(&T) -> usize,
    failures: u32,
}

impl<T> Batcher<T> {
    /// Batches of at most `max_batch` requests, whatever their size.
    pub fn new(max_batch: usize) -> Self {
        Self::with_bytes(max_batch, usize::MAX, |_| 0)
    }

    /// Batches of at most `max_batch` requests and `max_bytes` bytes, as `weight` counts.
    pub fn with_bytes(max_batch: usize, max_bytes: usize, weight: fn(&T) -> usize) -> Self {
        Self {
            pending: VecDeque::new(),
            flush_scheduled: false,
            max_batch: max_batch.max(1),
            max_bytes: max_bytes.max(1),
            weight,
            failures: 0,
        }
    }

    /// Buffers a request; true when the caller must schedule a flush.
    pub fn push(&mut self, item: T) -> bool {
        self.pending.push_back(item);
        !std::mem::replace(&mut self.flush_scheduled, true)
    }

    /// Takes the next batch for a flush that is being handled now.
    pub fn take_batch(&mut self) -> Vec<T> {
        self.take_at_most(self.max_batch)
    }

    /// Like [`take_batch`](Self::take_batch), at most `limit` requests (isolating a bad one).
    pub fn take_at_most(&mut self, limit: usize) -> Vec<T> {
        self.flush_scheduled = false;
        let most = self.pending.len().min(self.max_batch).min(limit.max(1));
        let mut n = 0;
        let mut bytes = 0usize;
        for item in self.pending.iter().take(most) {
            bytes = bytes.saturating_add((self.weight)(item));
            if n > 0 && bytes > self.max_bytes {
                break;
            }
            n += 1;
        }
        self.pending.drain(..n).collect()
    }

    /// Puts a batch back in front, in its order, to be written again at once in smaller
    /// parts; not a failure of the database, so the retry delay does not grow.
    pub fn put_back(&mut self, batch: Vec<T>) {
        for item in batch.into_iter().rev() {
            self.pending.push_front(item);
        }
        self.flush_scheduled = true;
    }

    /// Puts a batch whose write failed back in front, in its order, and returns how long
    /// to wait before trying again (doubling up to five seconds).
    pub fn requeue(&mut self, batch: Vec<T>) -> Duration {
        for item in batch.into_iter().rev() {
            self.pending.push_front(item);
        }
        self.failures = self.failures.saturating_add(1);
        self.flush_scheduled = true;
        retry_delay(self.failures)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// True when more requests wait and no flush is scheduled yet; marks one scheduled.
    pub fn needs_flush(&mut self) -> bool {
        if self.pending.is_empty() || self.flush_scheduled {
            return false;
        }
        self.flush_scheduled = true;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// 50 ms, doubling per consecutive failure, at most 5 s.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(7);
    Duration::from_millis(50u64 << exponent).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_in_bytes_and_a_heavy_request_goes_alone() {
        let mut batcher = Batcher::with_bytes(100, 10, |n: &usize| *n);
        for n in [4, 4, 4, 30, 1, 1] {
            batcher.push(n);
        }
        assert_eq!(batcher.take_batch(), vec![4, 4]);
        assert_eq!(batcher.take_batch(), vec![4]);
        assert_eq!(batcher.take_batch(), vec![30]);
        assert_eq!(batcher.take_batch(), vec![1, 1]);
        assert!(batcher.is_empty());
    }

    #[test]
    fn first_push_schedules_one_flush_and_batches_are_bounded() {
        let mut batcher = Batcher::new(2);
        assert!(batcher.push(1));
        assert!(!batcher.push(2));
        assert!(!batcher.push(3));
        assert_eq!(batcher.take_batch(), vec![1, 2]);
        assert!(batcher.needs_flush());
        assert!(!batcher.needs_flush());
        assert_eq!(batcher.take_batch(), vec![3]);
        assert!(!batcher.needs_flush());
    }

    #[test]
    fn failed_batch_goes_back_in_front_in_order() {
        let mut batcher = Batcher::new(10);
        batcher.push(1);
        batcher.push(2);
        let batch = batcher.take_batch();
        batcher.push(3);
        let delay = batcher.requeue(batch);
        assert_eq!(delay, Duration::from_millis(50));
        assert_eq!(batcher.take_batch(), vec![1, 2, 3]);
        assert_eq!(retry_delay(20), Duration::from_secs(5));
    }
}
