//! Latency under a fixed offered rate, open loop: from the moment a `POST /events` is due
//! to the moment its `EnforcementCreated` arrives from a durable queue bound to the
//! service's exchange (as the executor's queue is; bound to `#`, so `EventCreated` is
//! routed too, as its consumers would have it), on PostgreSQL + RabbitMQ.
//!
//! Requests go out on a fixed schedule whatever the answers do: each is its own task on a
//! pooled keep-alive client, and its latency counts from when it was due, not from when
//! it was sent, so a stall shows in full instead of slowing the offer. Client, service,
//! database and broker share the machine.
//!
//! `cargo bench --bench latency` runs each rate of `ATTUNE_BENCH_RATES` (events/s, default
//! `10,1000,3000`; the first, near idle, shows what group commit costs a lone event) for
//! `ATTUNE_BENCH_SECONDS` (default 10) and prints p50, p99 and max per rate.
//! `ATTUNE_BENCH_BIND=enforcement.created` binds the queue to enforcements only, so every
//! `EventCreated` comes back unroutable and is parked (the default `mq.unroutable`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attune_sensor::service::Service;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor, PgConnection};
use support::{ADMIN_DB, AMQP, BoundQueue, Commits, env_usize, settings};

/// Longest wait for the last enforcement after the last request was due.
const DRAIN: Duration = Duration::from_secs(30);

/// What one rate's run saw.
struct Measured {
    offered: usize,
    received: usize,
    /// Each received event's latency, in receive order.
    latencies: Vec<Duration>,
    /// Requests that did not answer 201.
    refused: usize,
    /// From due to the `201` (stored and matched), per answered request.
    answered: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The sequence number a message carries in its event's payload.
fn seq_of(body: &[u8]) -> Option<(u64, u64)> {
    let message: Value = serde_json::from_slice(body).ok()?;
    let payload = &message["payload"]["payload"];
    Some((payload["run"].as_u64()?, payload["seq"].as_u64()?))
}

async fn offer(
    service_url: &str,
    queue: &BoundQueue,
    run: u64,
    rate: usize,
    seconds: usize,
) -> Measured {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("http client");
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let arrivals: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let consumer_tag = format!("latency-{run}");
    let mut consumer = queue
        .channel
        .basic_consume(
            queue.name.as_str().into(),
            consumer_tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let seen = arrivals.clone();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let now = Instant::now();
            if delivery.routing_key.as_str() == "enforcement.created"
                && let Some((of_run, seq)) = seq_of(&delivery.data)
                && of_run == run
            {
                let mut seen = seen.lock().expect("arrivals");
                seen.push((seq, now));
                if seen.len() == total {
                    break;
                }
            }
        }
    });

    let start = Instant::now() + Duration::from_millis(100);
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let url = format!("{service_url}/events");
    for seq in 0..total {
        let due = start + interval.mul_f64(seq as f64);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let url = url.clone();
        let refused = refused.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let body = json!({
                "trigger_ref": "e2e.manual",
                "payload": {"branch": "main", "run": run, "seq": seq},
            });
            let answered = client.post(&url).json(&body).send().await;
            if answered.is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED) {
                answers.lock().expect("answers").push(due.elapsed());
            } else {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, consuming).await;
    let _ = queue
        .channel
        .basic_cancel(consumer_tag.as_str().into(), Default::default())
        .await;
    let arrivals = arrivals.lock().expect("arrivals").clone();
    let latencies = arrivals
        .iter()
        .map(|(seq, at)| at.saturating_duration_since(start + interval.mul_f64(*seq as f64)))
        .collect();
    Measured {
        offered: total,
        received: arrivals.len(),
        latencies,
        refused: refused.load(std::sync::atomic::Ordering::Relaxed),
        answered: answers.lock().expect("answers").clone(),
    }
}

fn main() {
    support::run(bench());
}

async fn bench() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rates: Vec<usize> = std::env::var("ATTUNE_BENCH_RATES")
        .unwrap_or_else(|_| "10,1000,3000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| *r > 0)
        .collect();
    let seconds = env_usize("ATTUNE_BENCH_SECONDS", 10).max(1);

    let database = format!("attune_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = match PgConnection::connect(ADMIN_DB).await {
        Ok(admin) => admin,
        Err(error) => panic!("PostgreSQL at {ADMIN_DB} is needed for this benchmark: {error}"),
    };
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .expect("create database");
    let exchange = format!("attune.bench.{}", uuid::Uuid::new_v4().simple());
    let queue_name = format!("attune.bench.latency.{}", uuid::Uuid::new_v4().simple());
    let binding = std::env::var("ATTUNE_BENCH_BIND").unwrap_or_else(|_| "#".into());
    let queue = BoundQueue::declare(&exchange, &queue_name, &binding).await;
    queue
        .channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    let service = match Service::start(&settings(&url, AMQP, &exchange)).await {
        Ok(service) => service,
        Err(error) => panic!("service did not start: {error}"),
    };
    let service_url = format!("http://{}", service.admin_addr);

    // Warm up: connections, prepared statements, rule compilation.
    offer(&service_url, &queue, 0, 200, 1).await;
    for (index, rate) in rates.iter().enumerate() {
        let run = index as u64 + 1;
        let before = Commits::scrape(&service_url).await;
        let measured = offer(&service_url, &queue, run, *rate, seconds).await;
        let commits = Commits::scrape(&service_url).await.since(&before);
        let mut sorted = measured.latencies.clone();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut answered = measured.answered.clone();
        answered.sort_unstable();
        println!(
            "postgres+rabbitmq, {rate} events/s offered for {seconds} s (open loop, POST /events due -> EnforcementCreated consumed): \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} of {} received, {} requests not answered 201",
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0)),
            ms(sorted.last().copied().unwrap_or_default()),
            measured.received,
            measured.offered,
            measured.refused,
        );
        println!(
            "  {rate} events/s: POST /events due -> 201 (stored and matched): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(percentile(&answered, 50.0)),
            ms(percentile(&answered, 99.0)),
            ms(answered.last().copied().unwrap_or_default()),
        );
        println!("  {rate} events/s: {commits}");
    }
    service.shutdown().await;
    queue.delete().await;
    let _ = admin
        .execute(format!("DROP DATABASE {database} WITH (FORCE)").as_str())
        .await;
}
