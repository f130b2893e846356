//! Publishing outbox messages to RabbitMQ with publisher confirms.
//!
//! The connection is lazy and self-healing: nothing happens at construction, the first
//! publish connects, and any failure drops the connection so that the next publish
//! connects afresh. Together with the outbox (which republishes whatever was not
//! confirmed) this gives at-least-once delivery across broker outages without a
//! reconnect loop of its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use attune_actors::domain::OutboxMessage;
use attune_actors::ports::{BusError, PublishReport, PublishedBatch, Publisher, RefusalKind};
use attune_actors::sync::lock;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, ChannelStatus, Confirmation, Connection, ConnectionProperties,
    ConnectionStatus, DefaultConnectionBuilder, ExchangeKind, PublisherConfirm,
};
use tokio::sync::{Mutex, mpsc};
use tokio::time::timeout;

use self::window::{Returned, Slot};
use super::{DEFAULT_EXCHANGE, redact_url, scrub_secret};

mod window;

/// AMQP delivery mode 2: the broker writes the message to disk (on a durable queue).
const PERSISTENT: u8 = 2;

/// Tuning of a [`RabbitPublisher`]. The defaults suit the sensor service.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// How long one connection attempt (TCP, AMQP handshake, exchange declaration,
    /// `confirm.select`) may take before it counts as failed.
    pub connect_timeout: Duration,
    /// How long a publish may go without progress (a frame written or a confirm
    /// received) before the connection is considered broken.
    pub confirm_timeout: Duration,
    /// How many messages may await their confirm at once: a sliding window, in which a
    /// new message goes out as soon as the oldest one is confirmed, also across batches.
    pub max_in_flight: usize,
    /// The name shown for the connection in the RabbitMQ management UI.
    pub connection_name: String,
    /// CA certificates and client identity for `amqps://` (see `bus::tls`); `None`: the
    /// system's CAs and no client certificate.
    pub tls: Option<OwnedTLSConfig>,
    /// Message types published elsewhere than the publisher's exchange (`mq.routes`).
    pub routes: Vec<Route>,
}

/// Where one message type goes instead of the default exchange and its own routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `EventCreated`, `EnforcementCreated`, ...
    pub message_type: String,
    pub exchange: String,
    /// `None`: the message's own routing key (`event.created`, ...).
    pub routing_key: Option<String>,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(10),
            max_in_flight: 256,
            connection_name: "attune-sensor".to_owned(),
            tls: None,
            routes: Vec::new(),
        }
    }
}

/// One live connection with its confirm-mode channel.
struct Link {
    /// Owned here because dropping it closes the connection.
    connection: Connection,
    channel: Channel,
}

/// The state reported by [`RabbitPublisher::is_connected`].
const NEVER_TRIED: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A [`Publisher`] for a RabbitMQ topic exchange.
///
/// ```no_run
/// # async fn demo(batch: Vec<attune_actors::domain::OutboxMessage>) {
/// use attune_actors::ports::Publisher;
/// use attune_sensor::bus::RabbitPublisher;
///
/// // Does not touch the network; the broker may well be down right now.
/// let publisher = RabbitPublisher::new("amqp://guest:guest@127.0.0.1:5672/%2f", "attune.events");
/// let report = publisher.publish(&batch).await;
/// // `batch[..report.settled]` is settled (confirmed, or refused as `report.refused` says);
/// // retry the rest later.
/// if let Some(error) = report.error {
///     tracing::warn!(%error, "publish incomplete");
/// }
/// # }
/// ```
///
/// Each message goes to the exchange with its `routing_key`, persistent, as
/// `application/json`, with the AMQP `message_id` and `type` properties set from the
/// outbox row, so consumers can deduplicate on `message_id`.
pub struct RabbitPublisher {
    url: String,
    redacted_url: String,
    exchange: String,
    options: RabbitOptions,
    /// Held across a whole publish or stream: publishes are serialized, which keeps the
    /// confirms in order on the one channel.
    link: Mutex<Option<Link>>,
    state: AtomicU8,
    /// The live status of the current link, readable without awaiting `link`, so that
    /// readiness notices a connection that died between publishes.
    live: StdMutex<Option<(ConnectionStatus, ChannelStatus)>>,
}

impl fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("url", &self.redacted_url)
            .field("exchange", &self.exchange)
            .field("options", &self.options)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// The connection or channel is unusable; it is dropped and rebuilt next time.
#[derive(Clone)]
struct Broken(String);

/// A message the broker did not take although the link is fine.
struct Refused {
    kind: RefusalKind,
    reason: String,
}

impl RabbitPublisher {
    /// A publisher for `url` (`amqp://user:pass@host:port/vhost`) and the topic exchange
    /// `exchange` (empty means [`DEFAULT_EXCHANGE`]). Does not connect.
    pub fn new(url: &str, exchange: &str) -> Self {
        Self::with_options(url, exchange, RabbitOptions::default())
    }

    pub fn with_options(url: &str, exchange: &str, options: RabbitOptions) -> Self {
        let exchange = if exchange.is_empty() {
            DEFAULT_EXCHANGE
        } else {
            exchange
        };
        Self {
            url: url.to_owned(),
            redacted_url: redact_url(url),
            exchange: exchange.to_owned(),
            options: RabbitOptions {
                max_in_flight: options.max_in_flight.max(1),
                ..options
            },
            link: Mutex::new(None),
            state: AtomicU8::new(NEVER_TRIED),
            live: StdMutex::new(None),
        }
    }

    /// The exchange messages are published to (unless `routes` sends their type elsewhere).
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Every exchange this publisher sends to, the default one first; each is declared
    /// (durable) on connect.
    pub fn exchanges(&self) -> Vec<&str> {
        let mut exchanges = vec![self.exchange.as_str()];
        for route in &self.options.routes {
            if !exchanges.contains(&route.exchange.as_str()) {
                exchanges.push(route.exchange.as_str());
            }
        }
        exchanges
    }

    /// The exchange and routing key of `msg`.
    fn destination<'m>(&'m self, msg: &'m OutboxMessage) -> (&'m str, &'m str) {
        match self
            .options
            .routes
            .iter()
            .find(|r| r.message_type == msg.message_type)
        {
            Some(route) => (
                route.exchange.as_str(),
                route.routing_key.as_deref().unwrap_or(&msg.routing_key),
            ),
            None => (self.exchange.as_str(), msg.routing_key.as_str()),
        }
    }

    /// The broker URL with its password masked, fit for logs and status output.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Connects now instead of on the first publish (no-op when already connected).
    /// A failure is not fatal: the next publish tries again.
    pub async fn connect_now(&self) -> Result<(), BusError> {
        let mut link = self.link.lock().await;
        self.ensure_link(&mut link).await.map(|_| ())
    }

    /// Closes the connection cleanly (for shutdown, after the last publish). A later
    /// publish would connect again.
    pub async fn close(&self) {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.take() {
            let closing = link.connection.close(200, "shutting down".into());
            if let Err(e) = timeout(self.options.connect_timeout, closing).await {
                tracing::debug!(error = %e, "RabbitMQ connection did not close in time");
            }
        }
        self.set_live(None);
        self.state.store(DOWN, Ordering::SeqCst);
    }

    /// Returns the current link, connecting first if there is none or it died.
    async fn ensure_link<'a>(&self, slot: &'a mut Option<Link>) -> Result<&'a mut Link, BusError> {
        if slot.as_ref().is_some_and(|link| !link_alive(link)) {
            tracing::info!(url = %self.redacted_url, "RabbitMQ connection lost; reconnecting");
            self.drop_link(slot);
        }
        if slot.is_none() {
            match self.connect().await {
                Ok(link) => {
                    self.set_live(Some(&link));
                    let previous = self.state.swap(UP, Ordering::SeqCst);
                    tracing::info!(
                        url = %self.redacted_url,
                        exchange = %self.exchange,
                        reconnected = previous == DOWN,
                        "connected to RabbitMQ"
                    );
                    *slot = Some(link);
                }
                Err(reason) => {
                    let previous = self.state.swap(DOWN, Ordering::SeqCst);
                    // Warn on the transition only: while the broker stays down, every
                    // outbox tick retries and would repeat the same line.
                    if previous == DOWN {
                        tracing::debug!(url = %self.redacted_url, %reason, "RabbitMQ still unreachable");
                    } else {
                        tracing::warn!(url = %self.redacted_url, %reason, "cannot connect to RabbitMQ");
                    }
                    return Err(BusError::Unavailable(reason));
                }
            }
        }
        slot.as_mut()
            .ok_or_else(|| BusError::Unavailable("no connection".to_owned()))
    }

    async fn connect(&self) -> Result<Link, String> {
        let exchanges = self
            .exchanges()
            .into_iter()
            .map(|name| {
                ShortString::try_new(name)
                    .map_err(|e| format!("invalid exchange name '{name}': {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let properties = ConnectionProperties::default()
            .with_connection_name(self.options.connection_name.clone().into());
        let attempt = async {
            let connection = DefaultConnectionBuilder::new()?
                .with_uri_str(self.url.clone())
                .with_properties(properties)
                .with_tls_config(self.options.tls.clone().unwrap_or_default())
                .connect()
                .await?;
            let channel = connection.create_channel().await?;
            for exchange in exchanges {
                channel
                    .exchange_declare(
                        exchange,
                        ExchangeKind::Topic,
                        ExchangeDeclareOptions {
                            durable: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(Link {
                connection,
                channel,
            })
        };
        match timeout(self.options.connect_timeout, attempt).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(format!(
                "{}: {}{}",
                self.redacted_url,
                scrub_secret(&e.to_string(), &self.url),
                tls_hint(&e.to_string())
            )),
            Err(_) => Err(format!(
                "{}: no connection within {:?}",
                self.redacted_url, self.options.connect_timeout
            )),
        }
    }

    fn drop_link(&self, slot: &mut Option<Link>) {
        // Dropping the connection closes it (politely if it still can), and with it every
        // confirm still pending on it.
        *slot = None;
        self.set_live(None);
    }

    fn set_live(&self, link: Option<&Link>) {
        let status = link.map(|l| (l.connection.status().clone(), l.channel.status().clone()));
        *lock(&self.live) = status;
    }

    /// Hands one message to lapin and returns without waiting for it to be written, let
    /// alone confirmed; that is what lets many messages be in flight at once.
    async fn send(&self, channel: &Channel, msg: &OutboxMessage) -> Result<Slot, Broken> {
        let refused = |what: &str, e: lapin::types::ShortStringError| {
            Slot::Refused(Refused {
                kind: RefusalKind::Nacked,
                reason: format!("{what} cannot be sent over AMQP: {e}"),
            })
        };
        let (exchange, routing_key) = self.destination(msg);
        let exchange = match ShortString::try_new(exchange) {
            Ok(exchange) => exchange,
            Err(e) => return Ok(refused("exchange name", e)),
        };
        let routing_key = match ShortString::try_new(routing_key) {
            Ok(key) => key,
            Err(e) => return Ok(refused("routing key", e)),
        };
        let message_type = match ShortString::try_new(msg.message_type.as_str()) {
            Ok(message_type) => message_type,
            Err(e) => return Ok(refused("message type", e)),
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(msg.message_id.to_string().into())
            .with_type(message_type);
        // Mandatory: the broker returns what no queue takes instead of confirming it as
        // if it had been delivered (see `mq.unroutable`).
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        // The future owns what it sends, so the window can outlive the batch it came in.
        let channel = channel.clone();
        let body = msg.body.clone().into_bytes();
        let mut publish: Writing = Box::pin(async move {
            channel
                .basic_publish(exchange, routing_key, options, &body, properties)
                .await
        });
        // lapin 4 takes the delivery tag and queues the frames during the first poll,
        // before its first await (it then waits for its IO thread to write them). Polling
        // once here, in batch order, fixes the order on the wire and of the confirms;
        // awaiting the write per message instead would cost a thread round trip each.
        match std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await {
            Poll::Ready(Ok(confirm)) => Ok(Slot::Written(confirm)),
            Poll::Ready(Err(e)) => Err(self.broken("publish failed", &e)),
            Poll::Pending => Ok(Slot::Queued(publish)),
        }
    }

    /// Waits until lapin has written a queued message.
    async fn written(&self, publish: Writing) -> Result<PublisherConfirm, Broken> {
        let limit = self.options.confirm_timeout;
        match timeout(limit, publish).await {
            Ok(Ok(confirm)) => Ok(confirm),
            Ok(Err(e)) => Err(self.broken("publish failed", &e)),
            Err(_) => Err(Broken(format!(
                "could not send within {limit:?} (broker blocking publishers or connection stalled)"
            ))),
        }
    }

    /// Waits for the broker's answer to a written message: `None` when confirmed, the
    /// refusal when the broker nacked or returned it.
    async fn settle_one(
        &self,
        confirm: PublisherConfirm,
        returned: &mut Returned,
    ) -> Result<Option<Refused>, Broken> {
        let limit = self.options.confirm_timeout;
        match timeout(limit, confirm).await {
            Ok(confirmation) => self.judge(confirmation, returned),
            Err(_) => Err(Broken(format!("no confirm within {limit:?}"))),
        }
    }

    /// What the broker's answer to one publish means for its message: `Some` when it was
    /// nacked. A message the broker returned may ride on *any* confirm (lapin hands each
    /// waiting return to the next confirm it resolves, and one multiple-ack resolves many
    /// at once), so returns are collected by message id in `returned` rather than taken
    /// as the fate of the confirm that carries them.
    fn judge(
        &self,
        confirmation: lapin::Result<Confirmation>,
        returned: &mut Returned,
    ) -> Result<Option<Refused>, Broken> {
        let (nacked, message) = match confirmation {
            Ok(Confirmation::Ack(message)) => (false, message),
            Ok(Confirmation::Nack(message)) => (true, message),
            Ok(Confirmation::NotRequested) => {
                return Err(Broken("channel is not in confirm mode".to_owned()));
            }
            Err(e) => return Err(self.broken("connection lost while awaiting confirms", &e)),
        };
        if let Some(message) = message {
            let reason = format!(
                "returned by the broker ({} {}): no queue is bound to exchange '{}' for routing key '{}'",
                message.reply_code,
                message.reply_text,
                message.delivery.exchange,
                message.delivery.routing_key
            );
            match message.delivery.properties.message_id() {
                Some(id) => {
                    returned.insert(id.to_string(), reason);
                }
                None => tracing::warn!(%reason, "RabbitMQ returned a message without a message id"),
            }
        }
        Ok(nacked.then(|| Refused {
            kind: RefusalKind::Nacked,
            reason: "negative acknowledgement from the broker".to_owned(),
        }))
    }

    fn broken(&self, what: &str, e: &lapin::Error) -> Broken {
        Broken(format!(
            "{what}: {}",
            scrub_secret(&e.to_string(), &self.url)
        ))
    }
}

/// The future of one `basic_publish`: resolves once lapin has written the frames.
type Writing = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

fn link_alive(link: &Link) -> bool {
    link.connection.status().connected() && link.channel.status().connected()
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn publish(&self, batch: &[OutboxMessage]) -> PublishReport {
        if batch.is_empty() {
            return PublishReport::default();
        }
        let (batch_tx, batch_rx) = mpsc::channel(1);
        let (report_tx, mut report_rx) = mpsc::channel(1);
        // Both have room: neither send waits.
        let _ = batch_tx.send(batch.to_vec()).await;
        drop(batch_tx);
        self.publish_stream(batch_rx, report_tx).await;
        match report_rx.recv().await {
            Some(published) => published.report,
            None => PublishReport::failed(BusError::Unavailable(
                "the publish ended without a report".to_owned(),
            )),
        }
    }

    async fn publish_stream(
        &self,
        mut batches: mpsc::Receiver<Vec<OutboxMessage>>,
        reports: mpsc::Sender<PublishedBatch>,
    ) {
        // Connect only once there is something to send.
        let Some(first) = batches.recv().await else {
            return;
        };
        let mut slot = self.link.lock().await;
        let channel = match self.ensure_link(&mut slot).await {
            Ok(link) => link.channel.clone(),
            Err(error) => {
                let failed = PublishedBatch {
                    rows: first,
                    report: PublishReport::failed(error),
                    took: Duration::ZERO,
                };
                let _ = reports.send(failed).await;
                return;
            }
        };
        let window = window::Window::new(self, channel);
        if let Some(error) = window.run(first, &mut batches, &reports).await {
            self.drop_link(&mut slot);
            self.state.store(DOWN, Ordering::SeqCst);
            tracing::warn!(
                url = %self.redacted_url,
                %error,
                "RabbitMQ publish failed; will reconnect on the next publish"
            );
        }
    }

    fn is_connected(&self) -> bool {
        if self.state.load(Ordering::SeqCst) != UP {
            return false;
        }
        let live = lock(&self.live);
        live.as_ref()
            .is_some_and(|(connection, channel)| connection.connected() && channel.connected())
    }

    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn connect(&self) -> Result<(), BusError> {
        self.connect_now().await
    }

    async fn close(&self) {
        RabbitPublisher::close(self).await;
    }
}

/// Points a TLS failure at the settings that cause it, since the library's message names
/// neither (e.g. "invalid peer certificate: UnknownIssuer").
fn tls_hint(error: &str) -> &'static str {
    let lower = error.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        " (TLS: check mq.tls.ca_file and that the broker's certificate names the host in mq.url)"
    } else {
        ""
    }
}
