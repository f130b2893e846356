//! Shutdown against one deadline: stop the sensors, write what is in flight, drain the
//! outbox, stop the pipeline. Every phase is bounded by the same deadline, so the whole
//! shutdown ends by it (plus a short, fixed tail for stopping the actors).

use ractor::rpc::CallResult;
use ractor::{Message, RpcReplyPort};
use std::time::Duration;
use tokio::time::Instant;

use super::SupervisorState;
use super::messages::{PipelineKind, ShutdownReport};
use crate::generator::GeneratorMsg;
use crate::live_ref::LiveRef;
use crate::matcher::MatcherMsg;
use crate::outbox::OutboxMsg;

/// What part of the time left the sensors may take to stop; the rest is kept for writing
/// what they emitted and publishing it.
const SENSOR_SHARE: f64 = 0.75;

/// After the deadline: how long the pipeline actors, then the publisher's connection, get
/// to close before they are dropped.
const TAIL: Duration = Duration::from_millis(400);

/// How far past the deadline an actor that stops at the deadline may still say so.
const ANSWER_GRACE: Duration = Duration::from_millis(100);

/// The most a shutdown takes past its deadline: the answers' grace, then stopping the
/// pipeline and closing the broker connection, each bounded by [`TAIL`].
pub const PAST_DEADLINE: Duration = ANSWER_GRACE.saturating_add(TAIL).saturating_add(TAIL);

impl SupervisorState {
    pub(super) async fn shutdown(&mut self, deadline: Instant) -> ShutdownReport {
        let left = deadline.saturating_duration_since(Instant::now());
        let sensors_by = Instant::now() + left.mul_f64(SENSOR_SHARE);
        let all: Vec<String> = self.sensors.keys().cloned().collect();
        self.stop_sensors(all, Some(sensors_by)).await;
        self.release_sensor_leases().await;
        self.shutting_down = true;
        // From here on, pipeline actors going down is expected.
        self.children.clear();

        // One instant for every answer, so the allowance past the deadline is paid once.
        let answers_by = deadline + ANSWER_GRACE;
        // A generator or matcher that is down holds nothing in flight.
        let generator = ask_until(
            &self.refs.generator,
            GeneratorMsg::FlushAll,
            deadline,
            answers_by,
        )
        .await;
        let matcher = ask_until(
            &self.refs.matcher,
            MatcherMsg::FlushAll,
            deadline,
            answers_by,
        )
        .await;
        let in_flight_written = generator.unwrap_or(true) && matcher.unwrap_or(true);
        if !in_flight_written {
            tracing::error!(
                "the database did not take every in-flight event before the shutdown deadline"
            );
        }
        let outbox_drained =
            ask_until(&self.refs.outbox, OutboxMsg::DrainAll, deadline, answers_by)
                .await
                .unwrap_or(false);

        self.stop_pipeline().await;
        if tokio::time::timeout(TAIL, self.publisher.close())
            .await
            .is_err()
        {
            tracing::warn!("the broker connection did not close in time; dropped");
        }
        self.publish_status();
        ShutdownReport {
            in_flight_written,
            outbox_drained,
        }
    }

    /// Stops the pipeline actors together, killing any that take longer than [`TAIL`].
    async fn stop_pipeline(&mut self) {
        let mut stopping = tokio::task::JoinSet::new();
        for kind in PipelineKind::ALL {
            if let Some(cell) = self.pipeline.get_mut(&kind).and_then(|p| p.cell.take()) {
                stopping.spawn(async move {
                    if cell.stop_and_wait(None, Some(TAIL)).await.is_err() {
                        cell.kill();
                    }
                });
            }
        }
        while stopping.join_next().await.is_some() {}
        self.refs.clear();
    }
}

/// Asks a pipeline actor to finish its work by `deadline` and returns its answer: `None`
/// when it is down, false when it does not answer by then (stuck in a database call).
async fn ask_until<M: Message>(
    actor: &LiveRef<M>,
    request: fn(Instant, RpcReplyPort<bool>) -> M,
    deadline: Instant,
    answers_by: Instant,
) -> Option<bool> {
    let actor = actor.get()?;
    let wait = answers_by.saturating_duration_since(Instant::now());
    Some(matches!(
        actor
            .call(|reply| request(deadline, reply), Some(wait))
            .await,
        Ok(CallResult::Success(true))
    ))
}
