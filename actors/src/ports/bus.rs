//! The messaging port: how the outbox publisher hands committed rows to the broker.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::domain::OutboxMessage;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker refused message {message_id}: {reason}")]
    Nacked {
        message_id: uuid::Uuid,
        reason: String,
    },
}

/// What a publish achieved: the broker settled the first `settled` messages of the batch,
/// each either confirmed or, if listed in `refused`, refused on its own; `error` says why
/// the rest were not settled (the broker went away).
#[derive(Debug, Default)]
pub struct PublishReport {
    pub settled: usize,
    /// Messages among the settled ones that the broker did not take, in batch order.
    pub refused: Vec<Refusal>,
    pub error: Option<BusError>,
}

impl PublishReport {
    /// A batch whose first `settled` messages were all confirmed.
    pub fn confirmed(settled: usize) -> Self {
        Self {
            settled,
            ..Self::default()
        }
    }

    /// Nothing settled, for this reason.
    pub fn failed(error: BusError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    /// How many settled messages the broker confirmed.
    pub fn confirmed_count(&self) -> usize {
        self.settled - self.refused.len()
    }
}

/// One batch of a [`Publisher::publish_stream`], handed back once all of it is settled
/// (or the link broke).
#[derive(Debug)]
pub struct PublishedBatch {
    pub rows: Vec<OutboxMessage>,
    pub report: PublishReport,
    /// From taking the batch to its last confirm.
    pub took: Duration,
}

/// One message of a batch the broker did not take, while the link itself stayed good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its index in the published batch.
    pub index: usize,
    pub kind: RefusalKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The broker answered with a negative acknowledgement, or the message cannot be put
    /// into a frame at all (e.g. a routing key over 255 bytes).
    Nacked,
    /// The broker returned it because no queue is bound for its routing key.
    Unroutable,
}

/// The message bus, seen from the outbox publisher.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes the batch in order, keeping the messages in flight together, and waits
    /// for the broker's confirms.
    async fn publish(&self, batch: &[OutboxMessage]) -> PublishReport;

    /// Publishes the batches that arrive on `batches`, in order, and sends each back on
    /// `reports` once all of it is settled. Returns when `batches` is closed and everything
    /// is settled, or right after the first report with an error (the batches still
    /// queued stay unpublished).
    ///
    /// A broker link overrides this to keep one confirm window open across batches, so
    /// the next batch goes out while the previous one's last confirms are on their way;
    /// this default publishes one batch after the other.
    async fn publish_stream(
        &self,
        mut batches: mpsc::Receiver<Vec<OutboxMessage>>,
        reports: mpsc::Sender<PublishedBatch>,
    ) {
        while let Some(rows) = batches.recv().await {
            let started = Instant::now();
            let report = self.publish(&rows).await;
            let failed = report.error.is_some();
            let batch = PublishedBatch {
                rows,
                report,
                took: started.elapsed(),
            };
            if reports.send(batch).await.is_err() || failed {
                return;
            }
        }
    }

    /// Whether the last attempt to reach the broker succeeded (for readiness).
    fn is_connected(&self) -> bool;

    /// Connects now if not connected. The outbox publisher calls this when it has nothing
    /// to publish, so readiness and reconnection do not wait for the next message.
    async fn connect(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// Closes the connection after the last publish, on shutdown.
    async fn close(&self) {}

    /// A short name for status output (`rabbitmq`, `in-process`).
    fn kind(&self) -> &'static str;
}
