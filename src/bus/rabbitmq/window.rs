//! One sliding window of publisher confirms across a stream of batches.
//!
//! Messages go out in stream order, at most `max_in_flight` awaiting their confirm; a new
//! one goes out as soon as the oldest is settled. The window does not drain at a batch's
//! end: the next batch is sent while the previous one's last confirms are on their way,
//! and each batch is reported once its last message is settled.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use attune_actors::domain::OutboxMessage;
use attune_actors::ports::{BusError, PublishReport, PublishedBatch, Refusal, RefusalKind};
use futures_util::FutureExt;
use lapin::{Channel, PublisherConfirm};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::{Broken, RabbitPublisher, Refused, Writing};

/// One message of the window, in stream order.
pub(super) enum Slot {
    /// Frames queued, possibly not yet written.
    Queued(Writing),
    /// Written; the broker's confirm is due.
    Written(PublisherConfirm),
    /// Refused before it could be sent (its fate is known, but it is reported in order
    /// with the others).
    Refused(Refused),
    /// Settled already, seen while looking ahead for returned messages.
    Judged(Result<Option<Refused>, Broken>),
}

/// A batch of the stream with its report so far.
struct Open {
    rows: Vec<OutboxMessage>,
    report: PublishReport,
    /// Messages handed to lapin so far.
    sent: usize,
    started: Instant,
}

impl Open {
    fn new(rows: Vec<OutboxMessage>) -> Self {
        Self {
            rows,
            report: PublishReport::default(),
            sent: 0,
            started: Instant::now(),
        }
    }

    fn all_sent(&self) -> bool {
        self.sent == self.rows.len()
    }

    fn all_settled(&self) -> bool {
        self.report.settled == self.rows.len()
    }
}

/// Message ids the broker returned as unroutable, with why.
pub(super) type Returned = HashMap<String, String>;

/// The window on one channel.
pub(super) struct Window<'p> {
    publisher: &'p RabbitPublisher,
    channel: Channel,
    open: VecDeque<Open>,
    in_flight: VecDeque<Slot>,
    returned: Returned,
}

/// The receiver of the stream's reports went away: nothing more is worth sending.
struct Abandoned;

impl<'p> Window<'p> {
    pub(super) fn new(publisher: &'p RabbitPublisher, channel: Channel) -> Self {
        Self {
            publisher,
            channel,
            open: VecDeque::new(),
            in_flight: VecDeque::with_capacity(publisher.options.max_in_flight),
            returned: Returned::new(),
        }
    }

    /// Publishes `first` and every batch that arrives on `batches`, reporting each on
    /// `reports`. Returns why the link broke, if it did (that batch's report says so too).
    pub(super) async fn run(
        mut self,
        first: Vec<OutboxMessage>,
        batches: &mut mpsc::Receiver<Vec<OutboxMessage>>,
        reports: &mpsc::Sender<PublishedBatch>,
    ) -> Option<String> {
        match self.stream(first, batches, reports).await {
            Ok(()) | Err(Outcome::Abandoned(Abandoned)) => None,
            Err(Outcome::Broken(Broken(reason))) => {
                // Best effort: the receiver may be gone already.
                let _ = self.break_off(&reason, reports).await;
                Some(reason)
            }
        }
    }

    async fn stream(
        &mut self,
        first: Vec<OutboxMessage>,
        batches: &mut mpsc::Receiver<Vec<OutboxMessage>>,
        reports: &mpsc::Sender<PublishedBatch>,
    ) -> Result<(), Outcome> {
        let window = self.publisher.options.max_in_flight;
        let mut closed = false;
        self.open.push_back(Open::new(first));
        loop {
            self.finish_settled(reports).await?;
            if self.in_flight.len() < window
                && let Some(newest) = self.open.back_mut()
                && !newest.all_sent()
            {
                let slot = self
                    .publisher
                    .send(&self.channel, &newest.rows[newest.sent])
                    .await?;
                newest.sent += 1;
                self.in_flight.push_back(slot);
                continue;
            }
            let all_sent = self.open.back().is_none_or(Open::all_sent);
            if all_sent && !closed {
                let next = match batches.try_recv() {
                    Ok(rows) => Some(rows),
                    Err(TryRecvError::Disconnected) => None,
                    // Nothing to settle meanwhile: wait for the next batch.
                    Err(TryRecvError::Empty) if self.in_flight.is_empty() => batches.recv().await,
                    Err(TryRecvError::Empty) => {
                        self.settle_oldest().await?;
                        continue;
                    }
                };
                match next {
                    Some(rows) => self.open.push_back(Open::new(rows)),
                    None => closed = true,
                }
                continue;
            }
            if self.in_flight.is_empty() {
                // Everything sent and settled, and no batch will come.
                return Ok(());
            }
            self.settle_oldest().await?;
        }
    }

    /// Waits for the fate of the oldest message and counts it for its batch. When the link
    /// breaks on it, it stays in front as unsettled, so nothing behind it is counted.
    async fn settle_oldest(&mut self) -> Result<(), Broken> {
        let Some(oldest) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let fate = match oldest {
            Slot::Refused(refused) => Ok(Some(refused)),
            Slot::Judged(judged) => judged,
            Slot::Queued(publish) => match self.publisher.written(publish).await {
                Ok(confirm) => self.publisher.settle_one(confirm, &mut self.returned).await,
                Err(broken) => Err(broken),
            },
            Slot::Written(confirm) => self.publisher.settle_one(confirm, &mut self.returned).await,
        };
        match fate {
            Ok(fate) => {
                self.count(fate);
                Ok(())
            }
            Err(broken) => {
                self.in_flight.push_front(Slot::Judged(Err(broken.clone())));
                Err(broken)
            }
        }
    }

    /// Counts one settled message for the oldest batch that still has messages in flight.
    fn count(&mut self, fate: Option<Refused>) {
        if let Some(batch) = self.open.iter_mut().find(|b| !b.all_settled()) {
            note_settled(&mut batch.report, fate);
        }
    }

    /// Reports every leading batch that is wholly settled.
    async fn finish_settled(
        &mut self,
        reports: &mpsc::Sender<PublishedBatch>,
    ) -> Result<(), Abandoned> {
        while self
            .open
            .front()
            .is_some_and(|b| b.all_sent() && b.all_settled())
        {
            self.look_ahead();
            if let Some(batch) = self.open.pop_front() {
                self.report(batch, None, reports).await?;
            }
        }
        Ok(())
    }

    /// Judges the later messages whose answers are already here. A message the broker
    /// returned may ride on any confirm resolved by the same acknowledgement as its own
    /// (lapin hands each waiting return to the next confirm it resolves, and one
    /// multiple-ack resolves many), possibly one of the next batch's: those are all
    /// resolved by now, so a batch is reported with every return of its own.
    fn look_ahead(&mut self) {
        for slot in &mut self.in_flight {
            let judged = match slot {
                Slot::Queued(publish) => match publish.as_mut().now_or_never() {
                    Some(Ok(mut confirm)) => match (&mut confirm).now_or_never() {
                        Some(answer) => self.publisher.judge(answer, &mut self.returned),
                        None => {
                            *slot = Slot::Written(confirm);
                            break;
                        }
                    },
                    Some(Err(e)) => Err(self.publisher.broken("publish failed", &e)),
                    None => break,
                },
                Slot::Written(confirm) => match confirm.now_or_never() {
                    Some(answer) => self.publisher.judge(answer, &mut self.returned),
                    None => break,
                },
                Slot::Refused(_) | Slot::Judged(_) => continue,
            };
            *slot = Slot::Judged(judged);
        }
    }

    /// The link broke: counts the answers that arrived before the break without waiting
    /// for the rest, reports what is settled, and the first unsettled batch with the
    /// error. The batches behind it are not reported; their rows stay unpublished.
    async fn break_off(
        &mut self,
        reason: &str,
        reports: &mpsc::Sender<PublishedBatch>,
    ) -> Result<(), Abandoned> {
        self.look_ahead();
        while let Some(Slot::Judged(Ok(_)) | Slot::Refused(_)) = self.in_flight.front() {
            match self.in_flight.pop_front() {
                Some(Slot::Judged(Ok(fate))) => self.count(fate),
                Some(Slot::Refused(refused)) => self.count(Some(refused)),
                _ => break,
            }
        }
        self.finish_settled(reports).await?;
        if let Some(batch) = self.open.pop_front() {
            let error = BusError::Unavailable(reason.to_owned());
            self.report(batch, Some(error), reports).await?;
        }
        Ok(())
    }

    async fn report(
        &mut self,
        batch: Open,
        error: Option<BusError>,
        reports: &mpsc::Sender<PublishedBatch>,
    ) -> Result<(), Abandoned> {
        let Open {
            rows,
            mut report,
            started,
            ..
        } = batch;
        apply_returns(&mut report, &rows, &mut self.returned);
        report.error = error;
        for refusal in &report.refused {
            let message_id = rows[refusal.index].message_id;
            tracing::debug!(%message_id, reason = %refusal.reason, "RabbitMQ did not take a message");
        }
        let published = PublishedBatch {
            rows,
            report,
            took: started.elapsed(),
        };
        reports.send(published).await.map_err(|_| Abandoned)
    }
}

/// Why the stream stopped early.
enum Outcome {
    Broken(Broken),
    Abandoned(Abandoned),
}

impl From<Broken> for Outcome {
    fn from(broken: Broken) -> Self {
        Outcome::Broken(broken)
    }
}

impl From<Abandoned> for Outcome {
    fn from(abandoned: Abandoned) -> Self {
        Outcome::Abandoned(abandoned)
    }
}

/// Marks the settled messages of `batch` the broker returned as unroutable (unless
/// already refused otherwise), keeping the refusals in batch order.
fn apply_returns(report: &mut PublishReport, batch: &[OutboxMessage], returned: &mut Returned) {
    if returned.is_empty() {
        return;
    }
    for (index, message) in batch.iter().enumerate().take(report.settled) {
        if let Some(reason) = returned.remove(&message.message_id.to_string())
            && !report.refused.iter().any(|r| r.index == index)
        {
            report.refused.push(Refusal {
                index,
                kind: RefusalKind::Unroutable,
                reason,
            });
        }
    }
    report.refused.sort_by_key(|r| r.index);
}

/// Counts the next message of the batch as settled, refused if `fate` says so.
fn note_settled(report: &mut PublishReport, fate: Option<Refused>) {
    if let Some(Refused { kind, reason }) = fate {
        report.refused.push(Refusal {
            index: report.settled,
            kind,
            reason,
        });
    }
    report.settled += 1;
}
