//! The message bus adapters: RabbitMQ (against a real broker, through a cuttable proxy
//! for outages) and the in-process bus.

mod support {
    pub mod proxy;
    pub mod rabbitmq;
}

use std::time::{Duration, Instant};

use attune_actors::domain::OutboxMessage;
use attune_actors::ports::{BusError, Publisher, RefusalKind};
use attune_sensor::bus::{self, InProcessBus, RabbitOptions, RabbitPublisher};
use support::proxy::TcpProxy;
use support::rabbitmq::{TestQueue, amqp_addr, amqp_url_via, require_rabbitmq, unique_exchange};

const WAIT: Duration = Duration::from_secs(20);

fn message(n: usize, routing_key: &str) -> OutboxMessage {
    OutboxMessage {
        id: n as i64 + 1,
        message_id: uuid::Uuid::new_v4(),
        message_type: if n.is_multiple_of(2) {
            "EventCreated".to_owned()
        } else {
            "EnforcementCreated".to_owned()
        },
        routing_key: routing_key.to_owned(),
        body: format!(r#"{{"n":{n},"text":"message {n}"}}"#),
        attempts: 0,
    }
}

fn batch(range: std::ops::Range<usize>) -> Vec<OutboxMessage> {
    range
        .map(|n| message(n, &format!("test.{}.created", n % 3)))
        .collect()
}

fn ids(messages: &[OutboxMessage]) -> Vec<String> {
    messages.iter().map(|m| m.message_id.to_string()).collect()
}

/// Short timeouts so that outage tests finish quickly.
fn quick() -> RabbitOptions {
    RabbitOptions {
        connect_timeout: Duration::from_secs(2),
        confirm_timeout: Duration::from_secs(5),
        ..RabbitOptions::default()
    }
}

#[tokio::test]
async fn rabbitmq_delivers_a_batch_in_order_with_its_properties() {
    let url = require_rabbitmq().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "test.#").await;
    let publisher = RabbitPublisher::new(&url, &exchange);
    assert_eq!(publisher.kind(), "rabbitmq");

    let sent = batch(0..300);
    let report = publisher.publish(&sent).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.settled, sent.len());
    assert!(publisher.is_connected());

    let received = queue.wait_for(sent.len(), WAIT).await;
    assert_eq!(received.len(), sent.len(), "unexpected extra messages");
    for (sent, got) in sent.iter().zip(received) {
        assert_eq!(got.routing_key, sent.routing_key);
        assert_eq!(
            got.message_id.as_deref(),
            Some(sent.message_id.to_string().as_str())
        );
        assert_eq!(
            got.message_type.as_deref(),
            Some(sent.message_type.as_str())
        );
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        assert_eq!(got.delivery_mode, Some(2));
        assert_eq!(got.body, sent.body);
    }

    // A second batch on the same connection, routed by pattern.
    let mut only_ones = TestQueue::bind(&exchange, "test.1.*").await;
    let more = batch(300..330);
    let report = publisher.publish(&more).await;
    assert_eq!(report.settled, more.len(), "{:?}", report.error);
    let expected: Vec<String> = ids(&more[1..]).into_iter().step_by(3).collect();
    let got: Vec<String> = only_ones
        .wait_for(expected.len(), WAIT)
        .await
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    assert_eq!(got, expected);

    publisher.close().await;
    assert!(!publisher.is_connected());
    // Closing is not final: the next publish connects again.
    let last = batch(330..331);
    assert_eq!(publisher.publish(&last).await.settled, 1);
    queue.wait_for_ids(&ids(&last), WAIT).await;

    only_ones.finish().await;
    queue.finish().await;
}

#[tokio::test]
async fn rabbitmq_publisher_recovers_after_an_outage() {
    require_rabbitmq().await;
    let proxy = TcpProxy::start(amqp_addr()).await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let publisher = RabbitPublisher::with_options(&amqp_url_via(proxy.addr()), &exchange, quick());

    let first = batch(0..50);
    let report = publisher.publish(&first).await;
    assert_eq!(report.settled, first.len(), "{:?}", report.error);
    assert!(publisher.is_connected());

    proxy.cut().await;
    let second = batch(50..100);
    let report = publisher.publish(&second).await;
    assert!(
        matches!(report.error, Some(BusError::Unavailable(_))),
        "{:?}",
        report.error
    );
    assert!(report.settled < second.len());
    assert!(!publisher.is_connected());

    // Still down: another attempt fails the same way, without hanging.
    let started = Instant::now();
    let report = publisher.publish(&second[report.settled..]).await;
    assert!(report.error.is_some());
    assert_eq!(report.settled, 0);
    assert!(started.elapsed() < Duration::from_secs(4));

    proxy.restore();
    let report = publisher.publish(&second).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.settled, second.len());
    assert!(publisher.is_connected());

    let mut expected: Vec<String> = ids(&first);
    expected.extend(ids(&second));
    queue.wait_for_ids(&expected, WAIT).await;
    queue.finish().await;
}

#[tokio::test]
async fn rabbitmq_cut_in_the_middle_of_a_batch_loses_nothing_confirmed() {
    require_rabbitmq().await;
    let proxy = TcpProxy::start(amqp_addr()).await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let publisher = std::sync::Arc::new(RabbitPublisher::with_options(
        &amqp_url_via(proxy.addr()),
        &exchange,
        quick(),
    ));
    // Connect first so the cut lands while the batch is in flight.
    publisher
        .connect_now()
        .await
        .expect("connect through the proxy");

    // Large enough that it cannot be finished by the time the first message arrives.
    let sent = batch(0..50_000);
    let task = {
        let publisher = publisher.clone();
        let sent = sent.clone();
        tokio::spawn(async move { publisher.publish(&sent).await })
    };
    queue.wait_for(1, WAIT).await;
    proxy.cut().await;
    let report = task.await.expect("publish task");
    assert!(report.error.is_some(), "the cut went unnoticed");
    assert!(
        report.settled < sent.len(),
        "all {} confirmed despite the cut",
        sent.len()
    );
    assert!(!publisher.is_connected());
    // A confirm means the broker has routed the message: the confirmed prefix must be
    // there already, before anything is republished.
    queue
        .wait_for_ids(&ids(&sent[..report.settled]), WAIT)
        .await;

    // The outbox would now republish the unconfirmed rest.
    proxy.restore();
    let rest = &sent[report.settled..];
    let retry = publisher.publish(rest).await;
    assert!(retry.error.is_none(), "{:?}", retry.error);
    assert_eq!(retry.settled, rest.len());

    queue
        .wait_for_ids(&ids(&sent), Duration::from_secs(60))
        .await;
    queue.finish().await;
}

#[tokio::test]
async fn rabbitmq_publisher_can_be_created_while_the_broker_is_down() {
    require_rabbitmq().await;
    let proxy = TcpProxy::start(amqp_addr()).await;
    proxy.cut().await;
    let exchange = unique_exchange();
    let publisher = RabbitPublisher::with_options(&amqp_url_via(proxy.addr()), &exchange, quick());
    assert!(!publisher.is_connected());
    assert!(publisher.connect_now().await.is_err());
    let sent = batch(0..10);
    let report = publisher.publish(&sent).await;
    assert_eq!(report.settled, 0);
    assert!(matches!(report.error, Some(BusError::Unavailable(_))));
    assert!(!publisher.is_connected());

    proxy.restore();
    // The publisher declares the exchange itself once it gets through.
    publisher
        .connect_now()
        .await
        .expect("connect after restore");
    assert!(publisher.is_connected());
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let report = publisher.publish(&sent).await;
    assert_eq!(report.settled, sent.len(), "{:?}", report.error);
    let got: Vec<String> = queue
        .wait_for(sent.len(), WAIT)
        .await
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    assert_eq!(got, ids(&sent));
    queue.finish().await;
}

#[tokio::test]
async fn rabbitmq_errors_never_show_the_password() {
    // A closed port: bind, note the address, release it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let url = format!("amqp://attune:s3cr3t-pw@{addr}/%2f");
    let publisher = RabbitPublisher::with_options(&url, "", quick());
    assert_eq!(publisher.exchange(), bus::DEFAULT_EXCHANGE);
    let report = publisher.publish(&batch(0..1)).await;
    let error = report.error.expect("nothing listens there").to_string();
    assert!(!error.contains("s3cr3t"), "{error}");
    assert!(error.contains("attune:***@"), "{error}");
    assert!(!format!("{publisher:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn a_too_long_routing_key_is_refused_alone_not_a_connection_failure() {
    let url = require_rabbitmq().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let publisher = RabbitPublisher::new(&url, &exchange);
    let mut sent = batch(0..3);
    sent[1].routing_key = "x".repeat(300);
    let report = publisher.publish(&sent).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.settled, 3);
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    assert_eq!(report.refused[0].index, 1);
    assert_eq!(report.refused[0].kind, RefusalKind::Nacked);
    assert!(report.refused[0].reason.contains("routing key"));
    assert!(publisher.is_connected());
    queue
        .wait_for_ids(&ids(&[sent[0].clone(), sent[2].clone()]), WAIT)
        .await;
    queue.finish().await;
}

#[tokio::test]
async fn a_message_no_queue_takes_is_returned_as_unroutable() {
    let url = require_rabbitmq().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "test.0.#").await;
    let publisher = RabbitPublisher::new(&url, &exchange);
    // Many at once, so the broker acks several with one multiple-ack and lapin hands the
    // returns to whichever confirms it resolves: each return must still be pinned on its
    // own message.
    let sent = batch(0..600);
    let report = publisher.publish(&sent).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.settled, sent.len());
    let refused: Vec<usize> = report.refused.iter().map(|r| r.index).collect();
    let expected: Vec<usize> = (0..sent.len()).filter(|n| n % 3 != 0).collect();
    assert_eq!(refused, expected);
    for refusal in &report.refused {
        assert_eq!(refusal.kind, RefusalKind::Unroutable);
        let key = &sent[refusal.index].routing_key;
        assert!(refusal.reason.contains(key.as_str()), "{}", refusal.reason);
    }
    let routed: Vec<OutboxMessage> = sent.iter().step_by(3).cloned().collect();
    queue.wait_for_ids(&ids(&routed), WAIT).await;
    queue.finish().await;
}

#[tokio::test]
async fn a_stream_of_batches_is_reported_batch_by_batch_with_its_own_returns() {
    let url = require_rabbitmq().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "test.0.#").await;
    let publisher = RabbitPublisher::new(&url, &exchange);
    // Batches of a size unrelated to the window (256), so batch ends fall anywhere in it
    // and a returned message's return may ride on the next batch's confirms.
    let batches: Vec<Vec<OutboxMessage>> = (0..9).map(|k| batch(k * 97..(k + 1) * 97)).collect();
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(1);
    let (report_tx, mut report_rx) = tokio::sync::mpsc::channel(2);
    let feeding = batches.clone();
    let feeder = tokio::spawn(async move {
        for rows in feeding {
            batch_tx
                .send(rows)
                .await
                .expect("the stream takes every batch");
        }
    });
    let collector = tokio::spawn(async move {
        let mut reports = Vec::new();
        while let Some(published) = report_rx.recv().await {
            reports.push(published);
        }
        reports
    });
    publisher.publish_stream(batch_rx, report_tx).await;
    feeder.await.expect("feeder");
    let reports = collector.await.expect("collector");

    assert_eq!(reports.len(), batches.len(), "one report per batch");
    for (sent, published) in batches.iter().zip(&reports) {
        assert_eq!(
            ids(&published.rows),
            ids(sent),
            "reports come in stream order"
        );
        let report = &published.report;
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(report.settled, sent.len());
        let refused: Vec<usize> = report.refused.iter().map(|r| r.index).collect();
        let expected: Vec<usize> = (0..sent.len())
            .filter(|&i| sent[i].routing_key != "test.0.created")
            .collect();
        assert_eq!(
            refused, expected,
            "each return is pinned on its own message"
        );
        assert!(
            report
                .refused
                .iter()
                .all(|r| r.kind == RefusalKind::Unroutable)
        );
    }
    let routed: Vec<OutboxMessage> = batches
        .concat()
        .into_iter()
        .filter(|m| m.routing_key == "test.0.created")
        .collect();
    let got: Vec<String> = queue
        .wait_for(routed.len(), WAIT)
        .await
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    assert_eq!(got, ids(&routed), "the stream keeps the order on the wire");
    queue.finish().await;
}

/// Throughput of 500-message batches; run with
/// `cargo test --release --test bus -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn rabbitmq_publish_throughput() {
    let url = require_rabbitmq().await;
    let exchange = unique_exchange();
    let queue = TestQueue::bind(&exchange, "#").await;
    // ATTUNE_BENCH_WINDOW overrides the in-flight window, to compare settings.
    let mut options = RabbitOptions::default();
    if let Some(window) = std::env::var("ATTUNE_BENCH_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
    {
        options.max_in_flight = window;
    }
    let window = options.max_in_flight;
    let publisher = RabbitPublisher::with_options(&url, &exchange, options);
    publisher.connect_now().await.expect("connect");
    let batches: Vec<Vec<OutboxMessage>> = (0..40).map(|b| batch(b * 500..(b + 1) * 500)).collect();
    let started = Instant::now();
    for b in &batches {
        let report = publisher.publish(b).await;
        assert_eq!(report.settled, b.len(), "{:?}", report.error);
    }
    let elapsed = started.elapsed();
    let total = batches.len() * 500;
    println!(
        "published {total} messages in batches of 500, window {window}, in {elapsed:?}: {:.0} messages/s",
        total as f64 / elapsed.as_secs_f64()
    );
    queue.finish().await;
}

#[tokio::test]
async fn in_process_bus_delivers_by_topic_pattern() {
    let (publisher, local) =
        bus::open("", "", bus::TlsFiles::default(), &[]).expect("in-process bus");
    let bus: std::sync::Arc<InProcessBus> = local.expect("concrete in-process bus");
    assert_eq!(publisher.kind(), "in-process");
    assert!(publisher.is_connected());

    let mut everything = bus.subscribe("#");
    let mut created_ones = bus.subscribe("test.1.*");
    let dropped = bus.subscribe("test.#");
    drop(dropped);

    let sent = batch(0..30);
    let report = publisher.publish(&sent).await;
    assert_eq!(report.settled, sent.len());
    assert!(report.error.is_none());
    assert_eq!(bus.subscriber_count(), 2, "dropped subscriber not removed");

    for expected in &sent {
        let got = everything.try_recv().expect("message for '#'");
        assert_eq!(got.routing_key, expected.routing_key);
        assert_eq!(got.message_id, expected.message_id);
        assert_eq!(got.message_type, expected.message_type);
        assert_eq!(got.body, expected.body);
    }
    assert!(everything.try_recv().is_err());

    let mut got = Vec::new();
    while let Ok(message) = created_ones.try_recv() {
        got.push(message.message_id);
    }
    let expected: Vec<uuid::Uuid> = sent
        .iter()
        .filter(|m| m.routing_key == "test.1.created")
        .map(|m| m.message_id)
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 10);
}

#[test]
fn topic_patterns() {
    use attune_sensor::bus::topic_matches;
    assert!(topic_matches("event.*", "event.created"));
    assert!(!topic_matches("event.*", "event.created.late"));
    assert!(topic_matches("event.#", "event.created.late"));
    assert!(topic_matches("#", "anything.at.all"));
    assert!(topic_matches("*.created", "enforcement.created"));
    assert!(!topic_matches("*.created", "created"));
}

#[test]
fn open_refuses_unknown_schemes_without_leaking_secrets() {
    let err = bus::open(
        "kafka://u:topsecret@host/",
        "x",
        bus::TlsFiles::default(),
        &[],
    )
    .err()
    .expect("no Kafka bus");
    assert!(!err.to_string().contains("topsecret"), "{err}");
}

/// Every exchange a route names is declared durable when the publisher connects, so a
/// routed message has somewhere to go before any consumer declared it.
#[tokio::test]
async fn routed_exchanges_are_declared_on_connect() {
    let url = require_rabbitmq().await;
    let exchange = unique_exchange();
    let routed = unique_exchange();
    let options = RabbitOptions {
        routes: vec![bus::Route {
            message_type: "EnforcementCreated".into(),
            exchange: routed.clone(),
            routing_key: None,
        }],
        ..RabbitOptions::default()
    };
    let publisher = RabbitPublisher::with_options(&url, &exchange, options);
    assert_eq!(
        publisher.exchanges(),
        vec![exchange.as_str(), routed.as_str()]
    );
    publisher.connect_now().await.expect("connect");
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            routed.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the routed exchange exists (a passive declare fails with 404 otherwise)");
    let mut queue = TestQueue::bind(&routed, "#").await;
    let mut message = message(1, "enforcement.created");
    message.message_type = "EnforcementCreated".into();
    let report = publisher.publish(std::slice::from_ref(&message)).await;
    assert!(
        report.error.is_none() && report.refused.is_empty(),
        "{report:?}"
    );
    queue.wait_for_ids(&ids(&[message]), WAIT).await;
    queue.finish().await;
    publisher.close().await;
}
