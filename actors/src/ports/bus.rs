//! The messaging port: how the outbox publisher hands committed rows to the broker.

use async_trait::async_trait;

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

/// What a publish achieved: the first `confirmed` messages of the batch were confirmed by
/// the broker; `error` says why the rest were not.
#[derive(Debug, Default)]
pub struct PublishReport {
    pub confirmed: usize,
    pub error: Option<BusError>,
}

/// The message bus, seen from the outbox publisher.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes the batch in order, keeping the messages in flight together, and waits
    /// for the broker's confirms.
    async fn publish(&self, batch: &[OutboxMessage]) -> PublishReport;

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
