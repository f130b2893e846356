//! `attune-sensor outbox parked|retry`: the operator's view of outbox rows the broker
//! would not take. They work on the database directly, so they need no running service
//! (and work the same with several instances).

use attune_actors::domain::{Id, ParkedMessage};
use attune_actors::ports::{Store, StoreError};

/// Most parked rows `outbox parked` lists.
pub const LIST_LIMIT: u32 = 1000;

/// The `outbox parked` table: one line per row, oldest first.
pub fn render_parked(rows: &[ParkedMessage]) -> String {
    if rows.is_empty() {
        return "no parked outbox rows\n".to_owned();
    }
    let mut out = String::new();
    for row in rows {
        out.push_str(&format!(
            "{id}  {kind}  {key}  message_id={message_id}  attempts={attempts}  parked_at={parked}  error={error}\n",
            id = row.id,
            kind = row.message_type,
            key = row.routing_key,
            message_id = row.message_id,
            attempts = row.attempts,
            parked = row.parked_at.to_rfc3339(),
            error = row.last_error.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// Which parked rows `outbox retry` puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTarget {
    All,
    Rows(Vec<Id>),
}

/// Puts the target rows back into the publish order; returns the line to print.
pub async fn retry(store: &dyn Store, target: &RetryTarget) -> Result<String, StoreError> {
    let ids = match target {
        RetryTarget::All => None,
        RetryTarget::Rows(ids) => Some(ids.as_slice()),
    };
    let count = store.retry_parked(ids).await?;
    Ok(match (target, count) {
        (RetryTarget::Rows(ids), n) if (n as usize) < ids.len() => format!(
            "{n} of {} rows put back; the others are not parked (published, or no such row)\n",
            ids.len()
        ),
        (_, 1) => "1 parked row put back; the publisher sends it next\n".to_owned(),
        (_, n) => format!("{n} parked rows put back; the publisher sends them next\n"),
    })
}
