//! Pipeline throughput: system events through the whole service (event row + outbox,
//! rule matching, enforcement row + outbox, publish with confirms), each event matching
//! one rule, so each event is two messages.
//!
//! `cargo bench --bench pipeline` runs, in one process and one session:
//! - on PostgreSQL + RabbitMQ (a fresh database and exchange, with a durable queue bound
//!   to the exchange as the executor's queue is): first a bare lapin publisher probe
//!   (persistent messages, confirms, 256 in flight, the same message count and size),
//!   the broker's single-channel ceiling; then the service with one instance, and with
//!   two instances on the same database (events posted half to each). Each line reports
//!   events/s end to end (until the queue holds every message: the broker is asked, so
//!   the measuring does not load the database), the messages the queue holds (duplicates
//!   show), and the ratio of the service's message rate to the probe's. With one instance
//!   the queue is then emptied and the outbox replayed (every row marked unpublished
//!   again) to time the publisher alone against the probe, both from an empty queue;
//! - on SQLite + the in-process bus.
//!
//! Knobs: `ATTUNE_BENCH_EVENTS` (default 20000), `ATTUNE_BENCH_CONCURRENCY` (default 512),
//! `ATTUNE_BENCH_BACKENDS` (`postgres,sqlite`), `ATTUNE_BENCH_INSTANCES` (`1,2`: the
//! PostgreSQL runs), `ATTUNE_BENCH_QUEUE` (the durable queue bound; default one of its
//! own), `ATTUNE_BENCH_KEEP_QUEUE=1` (leave that queue with the last run's messages) and
//! `ATTUNE_BENCH_PROBE_CHANNELS` (e.g. `2,4`: after the one-channel probe, probes on that
//! many channels of one connection).
//!
//! Each probe and run also prints the cores that this process (the service and its load),
//! PostgreSQL and RabbitMQ used meanwhile, and the machine's idle share (`/proc`), since
//! all three share the machine's cores.

mod support;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use attune_actors::messages::{ENFORCEMENT_CREATED_KEY, EVENT_CREATED_KEY, MessageType};
use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use sqlx::{Connection as _, Executor, PgConnection};
use support::cpu::{CpuSample, ThreadTicks};
use support::{ADMIN_DB, AMQP, BoundQueue, Commits, env_usize, settings};

/// The probe's publish window, like the service's.
const IN_FLIGHT: usize = 256;
/// How long any wait of the benchmark may take before it fails, saying what it waited for.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

type Confirming<'a> = Pin<Box<dyn Future<Output = lapin::Result<lapin::Confirmation>> + Send + 'a>>;

/// The messages the probe sends: as the service's, alternately an `EventCreated` and an
/// `EnforcementCreated` with the same properties and bodies of the same length.
#[derive(Debug, Clone, Copy)]
struct Shape {
    event_body: usize,
    enforcement_body: usize,
}

/// The bodies of this benchmark's messages as the service writes them (`run` prints the
/// lengths it actually stored, to check): a system event with its config snapshot, and
/// the enforcement of the one rule it matches.
const SERVICE_SHAPE: Shape = Shape {
    event_body: 452,
    enforcement_body: 461,
};

/// The broker's ceiling on `channels` channels of one connection: `messages` persistent
/// messages shaped as the service's ([`Shape`]) with confirms, `IN_FLIGHT` at a time on each channel, to the
/// exchange the queue is bound to. Returns messages per second.
async fn probe(exchange: &str, messages: usize, shape: Shape, channels: usize) -> f64 {
    let connection = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("probe connection");
    let mut opened = Vec::new();
    for _ in 0..channels {
        let channel = connection.create_channel().await.expect("probe channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        opened.push(channel);
    }
    let started = Instant::now();
    let mut senders = Vec::new();
    for (index, channel) in opened.into_iter().enumerate() {
        let share = messages / channels + usize::from(index < messages % channels);
        let exchange = exchange.to_owned();
        senders.push(tokio::spawn(async move {
            probe_channel(&channel, &exchange, share, shape).await
        }));
    }
    for sender in senders {
        sender.await.expect("probe task");
    }
    messages as f64 / started.elapsed().as_secs_f64()
}

async fn probe_channel(channel: &lapin::Channel, exchange: &str, messages: usize, shape: Shape) {
    let event = vec![b'x'; shape.event_body];
    let enforcement = vec![b'x'; shape.enforcement_body];
    let mut in_flight: VecDeque<Confirming> = VecDeque::with_capacity(IN_FLIGHT);
    for n in 0..messages {
        let (message_type, routing_key, body) = if n % 2 == 0 {
            (MessageType::EventCreated, EVENT_CREATED_KEY, &event)
        } else {
            (
                MessageType::EnforcementCreated,
                ENFORCEMENT_CREATED_KEY,
                &enforcement,
            )
        };
        // The properties the service's publisher sets.
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(uuid::Uuid::new_v4().to_string().into())
            .with_type(message_type.as_str().into());
        let mut publish = Box::pin(channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        ));
        // One poll queues the frames in order (as the service's publisher does), without
        // a round trip to lapin's IO thread per message.
        let confirming: Confirming =
            match std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await {
                Poll::Ready(Ok(confirm)) => Box::pin(confirm),
                Poll::Ready(Err(error)) => panic!("probe publish: {error}"),
                Poll::Pending => Box::pin(async move { publish.await?.await }),
            };
        in_flight.push_back(confirming);
        if in_flight.len() >= IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.await.expect("probe confirm");
        }
    }
    for confirming in in_flight {
        confirming.await.expect("probe confirm");
    }
}

/// One run's figures.
struct Run {
    events: usize,
    messages: usize,
    end_to_end: Duration,
    /// What the queue held once every message was published (before any replay).
    held: Option<usize>,
    /// The replay's messages per second and rows, when there was one.
    replayed: Option<(f64, u64)>,
}

/// How fast the publisher alone drains a backlog: every outbox row of `database_url` is
/// marked unpublished again, and the drain is timed from the first message the queue
/// receives to the last (the publisher notices on its next poll). Returns messages per
/// second, how many rows it published again, and the cores used meanwhile.
async fn replay(
    store: &Arc<dyn attune_actors::ports::Store>,
    queue: &BoundQueue,
    database_url: &str,
) -> (f64, u64, String) {
    // The queue can hold a message before its row is marked: a mark still to come would
    // otherwise land after the reset below and keep that row out of the replay.
    settle_backlog(store).await;
    let mut db = PgConnection::connect(database_url)
        .await
        .expect("replay connection");
    let lengths: Vec<(String, f64)> = sqlx::query_as(
        "SELECT routing_key, avg(octet_length(body))::float8 FROM attune.outbox
         GROUP BY routing_key ORDER BY routing_key DESC",
    )
    .fetch_all(&mut db)
    .await
    .expect("message body lengths");
    let lengths: Vec<String> = lengths
        .iter()
        .map(|(key, bytes)| format!("{key} {bytes:.0} B"))
        .collect();
    println!(
        "  message bodies as stored: {} (the probe sends {} B and {} B)",
        lengths.join(", "),
        SERVICE_SHAPE.event_body,
        SERVICE_SHAPE.enforcement_body
    );
    let before = queue.count().await;
    db.execute("INSERT INTO attune.outbox_pending (id) SELECT id FROM attune.outbox ON CONFLICT DO NOTHING")
        .await
        .expect("mark the outbox unpublished");
    let total = store.outbox_backlog().await.expect("backlog");
    let (mut first, mut from, mut cpu_from) = (None, 0, None);
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let held = queue.count().await;
        assert!(
            Instant::now() < deadline,
            "replay: the queue holds {held} messages after {WAIT_LIMIT:?}, not the {} expected",
            u64::from(before) + total
        );
        if first.is_none() && held > before {
            first = Some(Instant::now());
            from = held;
            cpu_from = Some(CpuSample::now());
        }
        if u64::from(held) >= u64::from(before) + total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = first.map_or(Duration::ZERO, |t| t.elapsed());
    let cpu = cpu_from.map_or_else(String::new, |from| CpuSample::now().since(&from));
    let rate = f64::from(before + total as u32 - from) / took.as_secs_f64().max(1e-9);
    settle_backlog(store).await;
    (rate, total, cpu)
}

/// Waits until every outbox row is marked published.
async fn settle_backlog(store: &Arc<dyn attune_actors::ports::Store>) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        match store.outbox_backlog().await {
            Ok(0) => break,
            Ok(left) if Instant::now() >= deadline => {
                panic!("{left} outbox rows still unpublished after {WAIT_LIMIT:?}")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => panic!("backlog: {error}"),
        }
    }
}

async fn run(
    name: &str,
    all: Vec<Settings>,
    events: usize,
    concurrency: usize,
    queue: Option<&BoundQueue>,
    replay_from: Option<&str>,
) -> Run {
    let mut services = Vec::new();
    for settings in &all {
        match Service::start(settings).await {
            Ok(service) => services.push(Arc::new(service)),
            Err(error) => panic!("{name}: service did not start: {error}"),
        }
    }
    // Warm up: first events pay for rule compilation and connection setup.
    for service in &services {
        for i in 0..50 {
            let _ = service
                .tree
                .system_events
                .emit("e2e.manual", json!({"branch": "main", "n": i}))
                .await;
        }
    }
    let store = services[0].store.clone();
    settle_backlog(&store).await;
    let queued_before = match queue {
        Some(queue) => queue.count().await,
        None => 0,
    };
    let mut commits_before = Vec::new();
    for service in &services {
        commits_before.push(Commits::scrape(&format!("http://{}", service.admin_addr)).await);
    }
    let cpu_before = CpuSample::now();
    let threads_before = ThreadTicks::now();
    let started = Instant::now();
    let per_task = events / concurrency;
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        // Tasks alternate between the instances, as a load balancer would.
        let service = services[task % services.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut enforcements = 0;
            for i in 0..per_task {
                let payload = json!({"branch": "main", "task": task, "n": i});
                match service.tree.system_events.emit("e2e.manual", payload).await {
                    Ok(outcome) => enforcements += outcome.enforcement_ids.len(),
                    Err(error) => panic!("emit failed: {error}"),
                }
            }
            enforcements
        }));
    }
    let mut enforcements = 0;
    for task in tasks {
        enforcements += task.await.unwrap_or(0);
    }
    let stored = started.elapsed();
    let total = per_task * concurrency;
    match queue {
        // Done when the executor's queue holds every message: asking the broker costs the
        // database nothing, where counting the backlog every few ms would load it.
        Some(queue) => {
            let expected = queued_before as usize + total + enforcements;
            let deadline = Instant::now() + WAIT_LIMIT;
            while (queue.count().await as usize) < expected {
                assert!(
                    Instant::now() < deadline,
                    "{name}: the queue holds fewer than the {expected} messages expected after {WAIT_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        None => settle_backlog(&store).await,
    }
    let end_to_end = started.elapsed();
    let threads = ThreadTicks::now().since(&threads_before);
    let cpu = CpuSample::now().since(&cpu_before);
    println!(
        "{name}: {total} events, {enforcements} enforcements; stored and matched in {:.2} s = {:.0} events/s; \
         all {} messages published after {:.2} s = {:.0} events/s end to end",
        stored.as_secs_f64(),
        total as f64 / stored.as_secs_f64(),
        total + enforcements,
        end_to_end.as_secs_f64(),
        total as f64 / end_to_end.as_secs_f64(),
    );
    println!("  {name}: {cpu}");
    println!("  {name}: {threads}");
    for (service, before) in services.iter().zip(&commits_before) {
        let commits = Commits::scrape(&format!("http://{}", service.admin_addr)).await;
        println!("  {name}: {}", commits.since(before));
    }
    let held = match queue {
        Some(queue) => Some(queue.count().await as usize),
        None => None,
    };
    let replayed = match replay_from {
        Some(url) => {
            let queue = queue.expect("a replay needs the queue");
            // From an empty queue, as the probe's: a classic queue holding 40,000
            // messages took the probe's own messages about 9% slower.
            queue.purge().await;
            let (rate, rows, cpu) = replay(&store, queue, url).await;
            println!(
                "  {name}: outbox replay ({rows} rows marked unpublished, publisher alone): {rate:.0} msg/s; {cpu}"
            );
            Some((rate, rows))
        }
        None => None,
    };
    for service in services {
        if let Ok(service) = Arc::try_unwrap(service) {
            service.shutdown().await;
        }
    }
    Run {
        events: total,
        messages: total + enforcements,
        end_to_end,
        held,
        replayed,
    }
}

async fn postgres(events: usize, concurrency: usize) {
    let name = format!("attune_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = match PgConnection::connect(ADMIN_DB).await {
        Ok(admin) => admin,
        Err(error) => panic!("PostgreSQL at {ADMIN_DB} is needed for this benchmark: {error}"),
    };
    let exchange = format!("attune.bench.{}", uuid::Uuid::new_v4().simple());
    let queue_name = std::env::var("ATTUNE_BENCH_QUEUE")
        .unwrap_or_else(|_| format!("attune.bench.executor.{}", uuid::Uuid::new_v4().simple()));
    let keep = std::env::var("ATTUNE_BENCH_KEEP_QUEUE").is_ok_and(|v| v == "1");
    let queue = BoundQueue::declare(&exchange, &queue_name, "#").await;
    queue.purge().await;

    // The probe sends what the service will: two messages per event, shaped as its own.
    let cpu_before = CpuSample::now();
    let probe_rate = probe(&exchange, events * 2, SERVICE_SHAPE, 1).await;
    println!(
        "rabbitmq probe (bare lapin, persistent, confirms, {IN_FLIGHT} in flight, durable queue {queue_name} bound): {:.0} msg/s",
        probe_rate
    );
    println!("  probe: {}", CpuSample::now().since(&cpu_before));
    // More channels than one: whether the ceiling is the channel or the queue behind it.
    if let Ok(list) = std::env::var("ATTUNE_BENCH_PROBE_CHANNELS") {
        for channels in list
            .split(',')
            .filter_map(|n| n.trim().parse::<usize>().ok())
        {
            let channels = channels.max(1);
            queue.purge().await;
            let rate = probe(&exchange, events * 2, SERVICE_SHAPE, channels).await;
            println!(
                "rabbitmq probe on {channels} channel(s) of one connection: {rate:.0} msg/s = {:.2} x one channel",
                rate / probe_rate
            );
        }
    }
    queue.purge().await;

    let instances = std::env::var("ATTUNE_BENCH_INSTANCES").unwrap_or_else(|_| "1,2".into());
    let counts: Vec<usize> = instances
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    for (index, count) in counts.iter().enumerate() {
        let database = format!("{name}_{count}");
        if let Err(error) = admin
            .execute(format!("CREATE DATABASE {database}").as_str())
            .await
        {
            panic!("create database: {error}");
        }
        let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
        let all = (0..*count)
            .map(|_| settings(&url, AMQP, &exchange))
            .collect();
        let label = format!("postgres+rabbitmq, {count} instance(s)");
        // The replay once, with one instance: a second would only share the lease.
        let replay_from = (*count == 1).then_some(url.as_str());
        let result = run(&label, all, events, concurrency, Some(&queue), replay_from).await;
        let held = result.held.unwrap_or(0);
        // Warm-up messages are in the queue too.
        let warmup = 50 * 2 * count;
        let rate = result.messages as f64 / result.end_to_end.as_secs_f64();
        println!(
            "  {label}: {:.0} msg/s = {:.2} x the probe; queue holds {held} messages for {} sent ({} events, {} duplicates)",
            rate,
            rate / probe_rate,
            result.messages + warmup,
            result.events,
            held.saturating_sub(result.messages + warmup),
        );
        if let Some((replay_rate, _)) = result.replayed {
            println!(
                "  {label}: the publisher alone drains {replay_rate:.0} msg/s = {:.2} x the probe",
                replay_rate / probe_rate
            );
        }
        if !(keep && index + 1 == counts.len()) {
            queue.purge().await;
        }
        let _ = admin
            .execute(format!("DROP DATABASE {database} WITH (FORCE)").as_str())
            .await;
    }
    if !keep {
        queue.delete().await;
    }
}

fn main() {
    support::run(bench());
}

async fn bench() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events = env_usize("ATTUNE_BENCH_EVENTS", 20_000);
    let concurrency = env_usize("ATTUNE_BENCH_CONCURRENCY", 512).max(1);
    let backends =
        std::env::var("ATTUNE_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    if backends.contains("postgres") {
        postgres(events, concurrency).await;
    }
    if backends.contains("sqlite") {
        let dir =
            std::env::temp_dir().join(format!("attune-bench-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        run(
            "sqlite+in-process",
            vec![settings(&url, "", "attune.events")],
            events,
            concurrency,
            None,
            None,
        )
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
