#![allow(dead_code)]
//! RabbitMQ for integration tests: where it is, a loud failure when it is not there,
//! unique exchange names, and a queue that collects what reaches it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker tests use: `ATTUNE_TEST_AMQP_URL`, else the local default.
pub fn amqp_url() -> String {
    std::env::var("ATTUNE_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The broker's TCP address (what a [`super::proxy::TcpProxy`] should forward to).
pub fn amqp_addr() -> SocketAddr {
    let url = url::Url::parse(&amqp_url()).expect("ATTUNE_TEST_AMQP_URL is not a URL");
    let host = url.host_str().expect("AMQP URL without host");
    let port = url.port().unwrap_or(5672);
    (host, port)
        .to_socket_addrs()
        .expect("resolve AMQP host")
        .next()
        .expect("AMQP host has no address")
}

/// `amqp_url()` with its host and port replaced by `addr` (to go through a proxy).
pub fn amqp_url_via(addr: SocketAddr) -> String {
    let mut url = url::Url::parse(&amqp_url()).expect("ATTUNE_TEST_AMQP_URL is not a URL");
    url.set_ip_host(addr.ip()).expect("set host");
    url.set_port(Some(addr.port())).expect("set port");
    url.to_string()
}

/// Panics, saying how to start RabbitMQ, unless the broker accepts an AMQP connection.
/// Returns the URL.
pub async fn require_rabbitmq() -> String {
    let url = amqp_url();
    let attempt = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await;
    match attempt {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "OK".into()).await;
            url
        }
        Ok(Err(e)) => panic!("{}", unreachable_message(&e.to_string())),
        Err(_) => panic!("{}", unreachable_message("no answer within 5 s")),
    }
}

fn unreachable_message(reason: &str) -> String {
    format!(
        "RabbitMQ is required for this test but is unreachable at {} ({reason}).\n\
         Start it with `rabbitmq-server -detached` (or set ATTUNE_TEST_AMQP_URL).",
        attune_sensor::bus::redact_url(&amqp_url())
    )
}

/// A fresh exchange name, so that tests never see each other's messages.
pub fn unique_exchange() -> String {
    format!("attune.test.{}", uuid::Uuid::new_v4().simple())
}

/// A message as it arrived on a [`TestQueue`].
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub body: String,
}

/// An exclusive, auto-delete queue bound to an exchange, consumed in the background.
pub struct TestQueue {
    connection: Connection,
    channel: Channel,
    exchange: String,
    rx: mpsc::UnboundedReceiver<Received>,
    received: Vec<Received>,
}

impl TestQueue {
    /// Declares `exchange` (a durable topic exchange, as the publisher declares it) and a
    /// queue bound to it with `binding_key`, and starts consuming.
    pub async fn bind(exchange: &str, binding_key: &str) -> TestQueue {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("test queue: connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("create channel");
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                binding_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let p = &delivery.properties;
                let received = Received {
                    routing_key: delivery.routing_key.to_string(),
                    message_id: p.message_id().as_ref().map(|s| s.to_string()),
                    message_type: p.kind().as_ref().map(|s| s.to_string()),
                    content_type: p.content_type().as_ref().map(|s| s.to_string()),
                    delivery_mode: *p.delivery_mode(),
                    body: String::from_utf8_lossy(&delivery.data).into_owned(),
                };
                if tx.send(received).is_err() {
                    break;
                }
            }
        });
        TestQueue {
            connection,
            channel,
            exchange: exchange.to_owned(),
            rx,
            received: Vec::new(),
        }
    }

    /// Waits until at least `n` messages have arrived in total, then returns all of them
    /// in arrival order. Panics at the deadline, saying how many came.
    pub async fn wait_for(&mut self, n: usize, timeout: Duration) -> &[Received] {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.received.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => self.received.push(message),
                Ok(None) => panic!(
                    "test queue consumer stopped after {} of {n} messages",
                    self.received.len()
                ),
                Err(_) => panic!(
                    "only {} of {n} messages arrived within {timeout:?}",
                    self.received.len()
                ),
            }
        }
        &self.received
    }

    /// Waits until every message id in `ids` has arrived at least once (duplicates are
    /// fine: delivery is at-least-once). Panics at the deadline, naming a missing id.
    pub async fn wait_for_ids(&mut self, ids: &[String], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        for message in &self.received {
            if let Some(id) = &message.message_id {
                missing.remove(id.as_str());
            }
        }
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => {
                    if let Some(id) = &message.message_id {
                        missing.remove(id.as_str());
                    }
                    self.received.push(message);
                }
                Ok(None) => panic!("test queue consumer stopped; {} ids missing", missing.len()),
                Err(_) => panic!(
                    "{} of {} messages never arrived within {timeout:?} (e.g. {:?})",
                    missing.len(),
                    ids.len(),
                    missing.iter().next()
                ),
            }
        }
    }

    /// What has arrived so far, without waiting.
    pub fn received_now(&mut self) -> &[Received] {
        while let Ok(message) = self.rx.try_recv() {
            self.received.push(message);
        }
        &self.received
    }

    /// Deletes the exchange and closes the connection (which removes the queue).
    pub async fn finish(self) {
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.connection.close(200, "OK".into()).await;
    }
}
