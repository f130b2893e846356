//! Matching, at start, what this instance stored above its watermark and never matched
//! (a previous run stopped between committing events and committing their enforcements).
//! New events that arrive meanwhile are held until the recovered ones are queued, so the
//! watermark only ever passes events that are matched.

use ractor::ActorRef;

use super::{MatchRequest, MatcherMsg, MatcherState};

/// Where the matcher is in re-matching events a previous run left unmatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recovery {
    /// The watermark has not been read yet.
    Pending,
    /// Events in `(after, up_to]` are still to be queued.
    Running {
        after: i64,
        up_to: i64,
    },
    Done,
}

/// How many unmatched events one recovery step loads.
pub(super) const RECOVERY_BATCH: u32 = 1000;

impl MatcherState {
    /// Reads the watermark, then queues the events above it a chunk at a time; when done,
    /// releases the events that arrived meanwhile.
    pub(super) async fn recover_step(
        &mut self,
        myself: &ActorRef<MatcherMsg>,
    ) -> Result<(), ractor::MessagingErr<MatcherMsg>> {
        let store = self.args.store.clone();
        let step = match self.recovery {
            Recovery::Done => return Ok(()),
            Recovery::Pending => match (
                store.matched_through(&self.args.identity.instance).await,
                store.last_event_id().await,
            ) {
                // No watermark: this instance has no stored events, or all are matched.
                (Ok(None), Ok(_)) => {
                    self.recovery = Recovery::Done;
                    Ok(())
                }
                (Ok(Some(after)), Ok(up_to)) => {
                    if up_to > after {
                        tracing::info!(
                            from = after + 1,
                            to = up_to,
                            "matching events a previous run left unmatched"
                        );
                    }
                    self.recovery = Recovery::Running { after, up_to };
                    Ok(())
                }
                (Err(error), _) | (_, Err(error)) => Err(error),
            },
            Recovery::Running { after, up_to } if after >= up_to => {
                self.recovery = Recovery::Done;
                Ok(())
            }
            Recovery::Running { after, up_to } => {
                let instance = &self.args.identity.instance;
                match store
                    .events_between(instance, after, up_to, RECOVERY_BATCH)
                    .await
                {
                    Ok(events) => {
                        self.recovery = match events.last() {
                            Some(last) => Recovery::Running {
                                after: last.id,
                                up_to,
                            },
                            None => Recovery::Done,
                        };
                        let requests = events.into_iter().map(MatchRequest::recovered).collect();
                        self.enqueue(myself, requests)?;
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
        };
        match step {
            Err(error) => {
                tracing::warn!(%error, "cannot recover unmatched events yet; will retry");
                myself.send_after(crate::batch::retry_delay(4), || MatcherMsg::Recover);
            }
            Ok(()) if self.recovery == Recovery::Done => {
                let held = std::mem::take(&mut self.held);
                self.enqueue(myself, held)?;
            }
            Ok(()) => myself.send_message(MatcherMsg::Recover)?,
        }
        Ok(())
    }
}
