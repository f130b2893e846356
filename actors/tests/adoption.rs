//! A live instance matches what a dead one stored and never matched.

mod support {
    pub mod memory;
}

use attune_actors::{SupervisorArgs, SupervisorConfig, Tree};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::memory::{LOCAL, MemoryPublisher, MemoryStore, ScriptedFactory, wait_until};

async fn start(store: &MemoryStore) -> Tree {
    let config = SupervisorConfig {
        reconcile_interval: None,
        outbox_poll: Duration::from_millis(50),
        ..SupervisorConfig::default()
    };
    let (tree, _handle) = Tree::start(SupervisorArgs {
        config,
        store: Arc::new(store.clone()),
        publisher: Arc::new(MemoryPublisher::default()),
        factory: Arc::new(ScriptedFactory::default()),
        metrics: Arc::new(attune_actors::ports::NoMetrics),
        schemas: Arc::new(attune_actors::ports::NoSchemas),
    })
    .await
    .expect("tree starts");
    tree
}

#[tokio::test]
async fn a_dead_instances_unmatched_events_are_matched_and_its_watermark_forgotten() {
    let store = MemoryStore::default();
    store.add_trigger("test.tick");
    store.add_rule("test.all", "test.tick", json!([]));
    let left: Vec<i64> = (0..3)
        .map(|n| store.add_event_of_dead_instance("gone-1", "test.tick", json!({"n": n})))
        .collect();
    let other = store.add_event_of_dead_instance("gone-2", "test.tick", json!({"n": 9}));
    let tree = start(&store).await;
    // This instance's own events are matched as usual meanwhile.
    let fresh = tree
        .system_events
        .emit("test.tick", json!({"fresh": true}))
        .await
        .expect("emitted");
    assert_eq!(fresh.enforcement_ids.len(), 1);
    wait_until(
        "both dead instances' events got their enforcements",
        Duration::from_secs(10),
        || store.enforcements().len() == 5,
    )
    .await;
    let mut enforced: Vec<i64> = store.enforcements().iter().map(|e| e.event).collect();
    enforced.sort_unstable();
    let mut expected = left.clone();
    expected.push(other);
    expected.push(fresh.event_id);
    expected.sort_unstable();
    assert_eq!(enforced, expected, "each event once");
    wait_until(
        "the dead instances' watermarks are forgotten",
        Duration::from_secs(10),
        || store.watermark_of("gone-1").is_none() && store.watermark_of("gone-2").is_none(),
    )
    .await;
    assert_eq!(store.watermark_of(LOCAL), Some(fresh.event_id));
}
