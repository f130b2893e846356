//! One drain of the outbox: reading, publishing and marking overlap.
//!
//! Three parts run at once, joined by two short queues:
//! - the reader takes pending rows by id (each read starts after the last row it read), so
//!   the next batch is ready while the current one is in flight;
//! - the publisher ([`crate::ports::Publisher::publish_stream`]) sends the batches through
//!   one confirm window, without waiting for a batch's last confirms before sending the
//!   next;
//! - the marker records the fate of each settled batch, marking the published rows of
//!   every batch waiting for it in one statement and recording their refused rows in one
//!   transaction (group commits).
//!
//! A drain lasts at most its budget, so the actor stays responsive (shutdown, lease
//! renewal) under a steady flood. It stops reading at the first refusal to retry, read
//! error or broken link; what was already sent is still settled and marked. A row that
//! commits after the reader passed its id waits for the next drain, which starts from the
//! lowest pending id again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Disposition, OutboxArgs, disposition};
use crate::domain::{Id, OutboxMessage};
use crate::ports::{OutboxRefusal, PublishedBatch};

/// Batches read ahead of the one being sent: enough to hide a read, few enough to bound
/// memory (each holds up to `outbox.batch` rows).
const READ_AHEAD: usize = 1;
/// Settled batches waiting for the marker before the publisher has to wait for it.
const MARK_BEHIND: usize = 4;

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DrainEnd {
    /// Nothing more was pending (as far as the last read could tell).
    Empty,
    /// The budget ran out with rows still pending.
    More,
    /// Something failed; the rows not published wait for the next attempt.
    Failed(String),
}

/// How the reader stopped.
enum ReadEnd {
    Empty,
    OutOfTime,
    /// The marker or the publisher asked it to (a failure they report themselves).
    Stopped,
    Failed(String),
}

/// Drains for up to `budget`. Nothing in here changes the actor's state, so the three
/// parts can share `args`.
pub(super) async fn drain(args: &OutboxArgs, budget: Duration) -> DrainEnd {
    let until = Instant::now() + budget;
    let (batch_tx, batch_rx) = mpsc::channel(READ_AHEAD);
    let (report_tx, report_rx) = mpsc::channel(MARK_BEHIND);
    let stop = AtomicBool::new(false);
    let (read, (), mark_error) = tokio::join!(
        read(args, batch_tx, until, &stop),
        args.publisher.publish_stream(batch_rx, report_tx),
        mark(args, report_rx, &stop),
    );
    if let Some(error) = mark_error {
        return DrainEnd::Failed(error);
    }
    match read {
        ReadEnd::Failed(error) => DrainEnd::Failed(error),
        // The marker stops the reader only with an error (returned above), and a broken
        // link's report carries one: a publisher that quit without one is a failure too.
        ReadEnd::Stopped => {
            DrainEnd::Failed("the publisher stopped before settling every batch".to_owned())
        }
        ReadEnd::OutOfTime => DrainEnd::More,
        ReadEnd::Empty => DrainEnd::Empty,
    }
}

async fn read(
    args: &OutboxArgs,
    batches: mpsc::Sender<Vec<OutboxMessage>>,
    until: Instant,
    stop: &AtomicBool,
) -> ReadEnd {
    let mut after: Id = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return ReadEnd::Stopped;
        }
        if Instant::now() >= until {
            return ReadEnd::OutOfTime;
        }
        let rows = match args.store.pending_outbox(after, args.batch_size).await {
            Ok(rows) => rows,
            Err(error) => return ReadEnd::Failed(format!("reading the outbox failed: {error}")),
        };
        let Some(last) = rows.last() else {
            return ReadEnd::Empty;
        };
        after = last.id;
        let full = rows.len() >= args.batch_size as usize;
        if batches.send(rows).await.is_err() {
            // The publisher quit: its last report says why.
            return ReadEnd::Stopped;
        }
        if !full {
            return ReadEnd::Empty;
        }
    }
}

/// Marks what the publisher reports until it stops. Returns the first failure: a broken
/// link, a refusal to retry, a failed write.
async fn mark(
    args: &OutboxArgs,
    mut reports: mpsc::Receiver<PublishedBatch>,
    stop: &AtomicBool,
) -> Option<String> {
    let mut first_error = None;
    let mut fail = |error: String| {
        stop.store(true, Ordering::Relaxed);
        first_error.get_or_insert(error);
    };
    while let Some(first) = reports.recv().await {
        let mut waiting = vec![first];
        while let Ok(next) = reports.try_recv() {
            waiting.push(next);
        }
        let mut published = Vec::new();
        let mut refusals = Vec::new();
        for batch in waiting {
            if let Err(error) = settle(args, batch, &mut published, &mut refusals) {
                fail(error);
            }
        }
        if let Err(error) = args.store.record_outbox_refusals(&refusals).await {
            fail(format!("recording refused outbox rows failed: {error}"));
        }
        if !published.is_empty()
            && let Err(error) = args.store.mark_published(&published).await
        {
            // The rows will be published again: duplicates, never losses.
            fail(format!("marking outbox rows published failed: {error}"));
        }
    }
    first_error
}

/// Sorts out the fate of one settled batch: its published ids go to `published` and its
/// refused rows to `refusals` (both written by the caller, for every batch waiting at
/// once). `Err` when the drain must stop.
fn settle(
    args: &OutboxArgs,
    batch: PublishedBatch,
    published: &mut Vec<Id>,
    refusals: &mut Vec<OutboxRefusal>,
) -> Result<(), String> {
    let PublishedBatch { rows, report, took } = batch;
    let settled = &rows[..report.settled.min(rows.len())];
    args.metrics
        .messages_published(report.confirmed_count(), took);
    let unsettled = rows.len() - settled.len();
    if report.error.is_some() && unsettled > 0 {
        args.metrics.publish_failed(unsettled);
    }
    published.extend(
        settled
            .iter()
            .enumerate()
            .filter(|(index, _)| !report.refused.iter().any(|r| r.index == *index))
            .map(|(_, row)| row.id),
    );
    let mut retry_later = None;
    for refusal in &report.refused {
        let Some(row) = settled.get(refusal.index) else {
            continue;
        };
        let fate = disposition(
            refusal.kind,
            row.attempts,
            args.max_attempts,
            args.unroutable,
        );
        let attempts = row.attempts.saturating_add(1);
        let reason = &refusal.reason;
        match fate {
            Disposition::Drop => {
                tracing::warn!(id = row.id, message_id = %row.message_id, routing_key = %row.routing_key, %reason, "no queue took the message; dropped (mq.unroutable: drop)");
                published.push(row.id);
            }
            Disposition::Park => {
                args.metrics.rows_parked(1);
                tracing::warn!(id = row.id, message_id = %row.message_id, routing_key = %row.routing_key, attempts, %reason, "outbox row parked; `attune-sensor outbox retry` puts it back");
            }
            Disposition::Retry => {
                args.metrics.publish_failed(1);
                tracing::info!(id = row.id, message_id = %row.message_id, attempts, %reason, "the broker refused an outbox row; it will be retried");
                retry_later = Some(format!(
                    "the broker refused outbox row {}: {reason}",
                    row.id
                ));
            }
        }
        if fate != Disposition::Drop {
            refusals.push(OutboxRefusal {
                id: row.id,
                error: reason.clone(),
                park: fate == Disposition::Park,
            });
        }
    }
    if let Some(error) = report.error {
        return Err(format!("publishing failed: {error}"));
    }
    // The rows behind a refused one went out; it waits for the backoff.
    retry_later.map_or(Ok(()), Err)
}
