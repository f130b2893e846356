//! The embedded message bus: no broker, messages go straight to in-process subscribers.

use std::sync::Mutex;

use async_trait::async_trait;
use attune_actors::domain::OutboxMessage;
use attune_actors::ports::{PublishReport, Publisher};
use attune_actors::sync::lock;
use tokio::sync::mpsc;

/// A message as a subscriber of the [`InProcessBus`] receives it; the same fields a
/// RabbitMQ consumer sees as routing key, `message_id`, `type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredMessage {
    pub routing_key: String,
    pub message_id: uuid::Uuid,
    pub message_type: String,
    pub body: String,
}

struct Subscriber {
    pattern: String,
    tx: mpsc::UnboundedSender<DeliveredMessage>,
}

/// A [`Publisher`] that delivers within the process, with AMQP topic-exchange routing.
///
/// Every publish is confirmed in full. Each subscriber owns an unbounded queue, so a slow
/// subscriber never loses messages (it only costs memory) and never slows the publisher.
/// Like a topic exchange with no queue bound, a message that matches no subscriber is
/// dropped; subscribe before publishing what you want to see. (`mq.unroutable` is about
/// RabbitMQ: subscribers here are optional observers, the events and enforcements are in
/// the database either way.)
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use attune_actors::ports::Publisher;
/// use attune_sensor::bus::InProcessBus;
/// # use attune_actors::domain::OutboxMessage;
///
/// let bus = InProcessBus::new();
/// let mut enforcements = bus.subscribe("enforcement.*");
/// # let msg = OutboxMessage { id: 1, message_id: uuid::Uuid::new_v4(),
/// #     message_type: "EnforcementCreated".into(), routing_key: "enforcement.created".into(),
/// #     body: "{}".into(), attempts: 0 };
/// let report = bus.publish(&[msg]).await;
/// assert_eq!(report.settled, 1);
/// let delivered = enforcements.recv().await.unwrap();
/// assert_eq!(delivered.routing_key, "enforcement.created");
/// # }
/// ```
#[derive(Default)]
pub struct InProcessBus {
    /// Sending on an unbounded channel cannot panic, so a poisoned lock still guards a
    /// consistent list.
    subscribers: Mutex<Vec<Subscriber>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives, from now on, every published message whose routing key matches
    /// `pattern`, an AMQP topic pattern (see [`topic_matches`]). Drop the receiver to
    /// unsubscribe.
    pub fn subscribe(&self, pattern: &str) -> mpsc::UnboundedReceiver<DeliveredMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(Subscriber {
            pattern: pattern.to_owned(),
            tx,
        });
        rx
    }

    /// How many subscribers are still listening (dropped receivers are noticed on the
    /// next publish).
    pub fn subscriber_count(&self) -> usize {
        lock(&self.subscribers).len()
    }
}

#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, batch: &[OutboxMessage]) -> PublishReport {
        let mut subscribers = lock(&self.subscribers);
        for msg in batch {
            subscribers.retain(|sub| {
                if !topic_matches(&sub.pattern, &msg.routing_key) {
                    return !sub.tx.is_closed();
                }
                sub.tx
                    .send(DeliveredMessage {
                        routing_key: msg.routing_key.clone(),
                        message_id: msg.message_id,
                        message_type: msg.message_type.clone(),
                        body: msg.body.clone(),
                    })
                    .is_ok()
            });
        }
        tracing::trace!(count = batch.len(), "published in process");
        PublishReport::confirmed(batch.len())
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

/// Whether `routing_key` matches the AMQP topic `pattern`.
///
/// Both are split into words at `.`. In the pattern, `*` matches exactly one word and
/// `#` matches zero or more words; any other word must be equal. So `event.*` matches
/// `event.created` but not `event` or `event.a.b`, while `event.#` matches all three.
///
/// ```
/// use attune_sensor::bus::topic_matches;
/// assert!(topic_matches("*.created", "event.created"));
/// assert!(topic_matches("#.created", "created"));
/// assert!(!topic_matches("event.*", "event"));
/// ```
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    // matched[j]: the pattern words seen so far match the first j key words. A table
    // rather than backtracking keeps patterns with many `#` linear in the key length.
    let mut matched = vec![false; key.len() + 1];
    matched[0] = true;
    for word in pattern {
        let mut next = vec![false; key.len() + 1];
        match word {
            "#" => {
                let mut reachable = false;
                for j in 0..=key.len() {
                    reachable |= matched[j];
                    next[j] = reachable;
                }
            }
            "*" => {
                next[1..].copy_from_slice(&matched[..key.len()]);
            }
            literal => {
                for j in 0..key.len() {
                    next[j + 1] = matched[j] && key[j] == literal;
                }
            }
        }
        matched = next;
    }
    matched[key.len()]
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_follow_amqp_rules() {
        let cases = [
            ("event.created", "event.created", true),
            ("event.created", "event.updated", false),
            ("event.*", "event.created", true),
            ("event.*", "event", false),
            ("event.*", "event.a.b", false),
            ("*", "event", true),
            ("*", "event.created", false),
            ("#", "", true),
            ("#", "a.b.c", true),
            ("event.#", "event", true),
            ("event.#", "event.a.b", true),
            ("event.#", "events.a", false),
            ("#.created", "event.created", true),
            ("#.created", "created", true),
            ("#.created", "event.created.not", false),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("#.#", "x", true),
            ("*.*", "a.b", true),
            ("*.*", "a", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                topic_matches(pattern, key),
                expected,
                "pattern {pattern:?} key {key:?}"
            );
        }
    }

    #[test]
    fn many_hashes_do_not_blow_up() {
        let pattern = vec!["#"; 40].join(".") + ".x";
        let key = vec!["a"; 200].join(".");
        assert!(!topic_matches(&pattern, &key));
        assert!(topic_matches(&pattern, &(key + ".x")));
    }
}
