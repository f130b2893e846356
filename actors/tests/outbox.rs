//! The outbox publisher with a broker that refuses some messages: refused rows are retried,
//! then parked, and never hold up the rows behind them.

mod support {
    pub mod memory;
}

use attune_actors::outbox::UnroutablePolicy;
use attune_actors::ports::{RefusalKind, Store};
use attune_actors::{SupervisorArgs, SupervisorConfig, Tree};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::memory::{MemoryPublisher, MemoryStore, ScriptedFactory, wait_until};

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    tree: Tree,
    store: MemoryStore,
    publisher: MemoryPublisher,
}

/// A tree whose broker refuses every `event.created` message as `refusal`.
async fn start(refusal: RefusalKind, unroutable: UnroutablePolicy) -> Harness {
    let publisher = MemoryPublisher::default();
    publisher
        .refuse
        .lock()
        .unwrap()
        .insert("event.created".into(), refusal);
    start_with(
        publisher,
        unroutable,
        SupervisorConfig::default().outbox_batch,
    )
    .await
}

async fn start_with(
    publisher: MemoryPublisher,
    unroutable: UnroutablePolicy,
    outbox_batch: u32,
) -> Harness {
    let store = MemoryStore::default();
    store.add_trigger("test.tick");
    store.add_rule("test.all", "test.tick", json!([]));
    let config = SupervisorConfig {
        reconcile_interval: None,
        outbox_poll: Duration::from_millis(50),
        outbox_max_attempts: 3,
        outbox_batch,
        unroutable,
        ..SupervisorConfig::default()
    };
    let (tree, _handle) = Tree::start(SupervisorArgs {
        config,
        store: Arc::new(store.clone()),
        publisher: Arc::new(publisher.clone()),
        factory: Arc::new(ScriptedFactory::default()),
        metrics: Arc::new(attune_actors::ports::NoMetrics),
        schemas: Arc::new(attune_actors::ports::NoSchemas),
    })
    .await
    .expect("tree starts");
    Harness {
        tree,
        store,
        publisher,
    }
}

impl Harness {
    async fn emit(&self, n: usize) {
        for i in 0..n {
            self.tree
                .system_events
                .emit("test.tick", json!({"n": i}))
                .await
                .expect("emitted");
        }
    }

    fn published(&self, routing_key: &str) -> usize {
        let published = self.publisher.published.lock().unwrap();
        published
            .iter()
            .filter(|m| m.routing_key == routing_key)
            .count()
    }

    async fn parked(&self) -> u64 {
        self.store.parked_count().await.expect("count")
    }
}

/// Every outbox row was published exactly once, in id order.
fn assert_once_in_order(h: &Harness, rows: usize) {
    let published = h.publisher.published.lock().unwrap();
    let ids: Vec<i64> = published.iter().map(|m| m.id).collect();
    let mut once = ids.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(once.len(), rows, "every row published");
    assert_eq!(ids, once, "each once, lowest id first");
}

#[tokio::test]
async fn a_backlog_of_many_batches_is_published_once_in_order() {
    let h = start_with(MemoryPublisher::default(), UnroutablePolicy::Park, 50).await;
    h.emit(400).await;
    wait_until("every message is published", WAIT, || {
        h.published("enforcement.created") == 400 && h.published("event.created") == 400
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.store.outbox_backlog().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "rows never marked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_once_in_order(&h, 800);
}

#[tokio::test]
async fn a_link_that_breaks_in_the_middle_of_a_stream_loses_nothing() {
    let publisher = MemoryPublisher::default();
    *publisher.break_after.lock().unwrap() = Some(75);
    let h = start_with(publisher, UnroutablePolicy::Park, 50).await;
    h.emit(200).await;
    wait_until("every message is published", WAIT, || {
        h.published("enforcement.created") == 200 && h.published("event.created") == 200
    })
    .await;
    assert!(
        h.publisher.break_after.lock().unwrap().is_none(),
        "the link broke"
    );
    assert_once_in_order(&h, 400);
    assert_eq!(h.store.outbox_backlog().await.unwrap(), 0);
}

#[tokio::test]
async fn a_refused_row_is_retried_then_parked_and_later_rows_flow_on() {
    let h = start(RefusalKind::Nacked, UnroutablePolicy::Park).await;
    h.emit(5).await;
    wait_until("the enforcements are published", WAIT, || {
        h.published("enforcement.created") == 5
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.parked().await < 5 {
        assert!(tokio::time::Instant::now() < deadline, "rows never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let parked = h.store.parked_outbox(100).await.expect("parked rows");
    assert_eq!(parked.len(), 5);
    for row in &parked {
        assert_eq!(row.message_type, "EventCreated");
        assert_eq!(row.attempts, 3, "parked after outbox.max_attempts: {row:?}");
        let error = row.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("refuses event.created"), "{error}");
    }
    assert_eq!(h.store.outbox_backlog().await.unwrap(), 0);
    assert_eq!(h.published("event.created"), 0);

    // The broker takes them now; an operator puts them back.
    h.publisher.refuse.lock().unwrap().clear();
    let first = parked[0].id;
    assert_eq!(h.store.retry_parked(Some(&[first])).await.unwrap(), 1);
    wait_until("the retried row is published", WAIT, || {
        h.published("event.created") == 1
    })
    .await;
    assert_eq!(h.store.retry_parked(None).await.unwrap(), 4);
    wait_until("every parked row is published", WAIT, || {
        h.published("event.created") == 5
    })
    .await;
    assert_eq!(h.parked().await, 0);
}

#[tokio::test]
async fn an_unroutable_message_is_parked_at_once_by_default() {
    let h = start(RefusalKind::Unroutable, UnroutablePolicy::Park).await;
    h.emit(2).await;
    wait_until("the enforcements are published", WAIT, || {
        h.published("enforcement.created") == 2
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.parked().await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "rows never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let parked = h.store.parked_outbox(10).await.unwrap();
    assert!(parked.iter().all(|row| row.attempts == 1), "{parked:?}");
}

#[tokio::test]
async fn with_the_drop_policy_an_unroutable_message_counts_as_published() {
    let h = start(RefusalKind::Unroutable, UnroutablePolicy::Drop).await;
    h.emit(2).await;
    wait_until("the enforcements are published", WAIT, || {
        h.published("enforcement.created") == 2
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.store.outbox_backlog().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "rows never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.parked().await, 0);
    assert_eq!(h.published("event.created"), 0);
}

/// An uncertain commit: the batch with an idempotency key is committed but the answer is
/// lost, so the generator writes it again and the store answers a repeat. The event must
/// still be matched (its enforcement created), and the submitter hears of it.
#[tokio::test]
async fn an_event_whose_commit_answer_was_lost_is_still_matched() {
    use attune_actors::domain::{EventOrigin, IdempotencyKey};
    let h = start(RefusalKind::Nacked, UnroutablePolicy::Park).await;
    h.publisher.refuse.lock().unwrap().clear();
    h.store
        .lose_next_commit_answer
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let key = IdempotencyKey::new("api", "order-1", Duration::from_secs(60)).unwrap();
    let outcome = h
        .tree
        .system_events
        .emit_from(
            "test.tick",
            json!({"n": 1}),
            EventOrigin {
                idempotency_key: Some(key),
                traceparent: None,
            },
        )
        .await
        .expect("answered");
    assert!(
        outcome.repeat,
        "the retry found the committed key: {outcome:?}"
    );
    assert_eq!(
        outcome.enforcement_ids.len(),
        1,
        "the event was matched after all: {outcome:?}"
    );
    assert_eq!(h.store.enforcements().len(), 1);
    assert_eq!(h.store.events().len(), 1, "stored once");
}
