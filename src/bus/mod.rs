//! The message bus: where outbox messages go once they are stored.
//!
//! Two [`Publisher`] implementations exist:
//!
//! * [`RabbitPublisher`] publishes to a RabbitMQ topic exchange with publisher confirms.
//!   It connects lazily and reconnects by itself, so the service can start (and keep
//!   running) while the broker is down; the outbox simply grows until it is back.
//! * [`InProcessBus`] is the embedded default: it confirms everything at once and hands
//!   messages to in-process subscribers whose AMQP topic pattern matches.
//!
//! [`open`] picks one from the configured URL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), attune_sensor::bus::OpenError> {
//! use attune_sensor::bus;
//!
//! // Empty URL: the in-process bus, which also lets the service subscribe locally.
//! let (publisher, local) = bus::open("", bus::DEFAULT_EXCHANGE, bus::TlsFiles::default(), &[])?;
//! let mut events = local.expect("in-process bus").subscribe("event.#");
//! # let _ = (publisher, events.recv().await);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use attune_actors::ports::Publisher;

pub mod in_process;
pub mod rabbitmq;
pub mod tls;

pub use in_process::{DeliveredMessage, InProcessBus, topic_matches};
pub use rabbitmq::{RabbitOptions, RabbitPublisher, Route};
pub use tls::TlsFiles;

/// The exchange used when none is configured.
pub const DEFAULT_EXCHANGE: &str = "attune.events";

/// Why [`open`] refused a bus URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names a transport this build cannot speak. The text holds the redacted URL.
    #[error(
        "unsupported message bus URL {0} (expected amqp://..., amqps://... or empty for in-process)"
    )]
    UnsupportedScheme(String),
    #[error("cannot use `{key}` = {path}: {reason}")]
    TlsFile {
        key: &'static str,
        path: String,
        reason: String,
    },
}

/// What [`open`] returns: the publisher, and the same bus concretely typed when it is
/// the in-process one (so the caller can subscribe to it).
pub type OpenedBus = (Arc<dyn Publisher>, Option<Arc<InProcessBus>>);

/// Opens the message bus described by `url`.
///
/// * An empty (or blank) URL selects the [`InProcessBus`]; it is returned a second time,
///   concretely typed, so the caller can [`InProcessBus::subscribe`] to it.
/// * `amqp://user:pass@host:port/vhost` selects a [`RabbitPublisher`] publishing to
///   `exchange` (empty means [`DEFAULT_EXCHANGE`]). Nothing is connected yet: the first
///   publish connects, so this never fails because the broker is down.
///
/// * `amqps://...` is the same over TLS (rustls): the system's CAs plus `tls.ca_file`, an
///   optional client certificate, the broker's host name always verified. The files are
///   read now, so a bad one fails here, naming its setting.
///
/// `routes` sends some message types to other exchanges (RabbitMQ only: the in-process bus
/// routes by routing key alone).
pub fn open(
    url: &str,
    exchange: &str,
    tls: TlsFiles<'_>,
    routes: &[Route],
) -> Result<OpenedBus, OpenError> {
    let url = url.trim();
    if url.is_empty() {
        let bus = Arc::new(InProcessBus::new());
        let publisher: Arc<dyn Publisher> = bus.clone();
        return Ok((publisher, Some(bus)));
    }
    // Scheme names are case-insensitive (RFC 3986).
    let routes = routes.to_vec();
    if url.len() > 7 && url[..7].eq_ignore_ascii_case("amqp://") {
        let options = RabbitOptions {
            routes,
            ..RabbitOptions::default()
        };
        return Ok((
            Arc::new(RabbitPublisher::with_options(url, exchange, options)),
            None,
        ));
    }
    if url.len() > 8 && url[..8].eq_ignore_ascii_case("amqps://") {
        let options = RabbitOptions {
            tls: Some(tls.load()?),
            routes,
            ..RabbitOptions::default()
        };
        return Ok((
            Arc::new(RabbitPublisher::with_options(url, exchange, options)),
            None,
        ));
    }
    Err(OpenError::UnsupportedScheme(redact_url(url)))
}

/// Hides the password of a URL so it can be logged or shown.
///
/// `scheme://user:secret@host/...` becomes `scheme://user:***@host/...`; a `password`
/// (or `pass`) query parameter, as PostgreSQL URLs allow, is masked the same way.
/// Anything that is not such a URL is returned unchanged, so this is safe to apply to
/// every configured URL before it reaches a log line or an error message.
///
/// ```
/// use attune_sensor::bus::redact_url;
/// assert_eq!(
///     redact_url("amqp://guest:guest@localhost:5672/%2f"),
///     "amqp://guest:***@localhost:5672/%2f"
/// );
/// assert_eq!(
///     redact_url("postgres://app@db/attune?password=hunter2&sslmode=disable"),
///     "postgres://app@db/attune?password=***&sslmode=disable"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];

    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..authority_start]);
    // The password may itself contain '@' when not percent-encoded; the host never does,
    // so the last '@' ends the userinfo.
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }

    let tail = &rest[authority_len..];
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let query_and_fragment = &tail[q + 1..];
            let (query, fragment) = match query_and_fragment.find('#') {
                Some(h) => query_and_fragment.split_at(h),
                None => (query_and_fragment, ""),
            };
            let redacted: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _))
                        if key.eq_ignore_ascii_case("password")
                            || key.eq_ignore_ascii_case("pass") =>
                    {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&redacted.join("&"));
            out.push_str(fragment);
        }
        None => out.push_str(tail),
    }
    out
}

/// Removes every occurrence of the password of `url` from `text`.
///
/// Error messages of client libraries sometimes echo the URL they were given; this is
/// the last line of defence before such text is logged or returned.
pub(crate) fn scrub_secret(text: &str, url: &str) -> String {
    match password_of(url) {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_owned(),
    }
}

fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_passwords() {
        let cases = [
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            (
                "postgres://postgres:s3cr%40t@localhost/db",
                "postgres://postgres:***@localhost/db",
            ),
            ("postgres://u:p@ss@host:5432", "postgres://u:***@host:5432"),
            ("amqp://user@host/", "amqp://user@host/"),
            ("amqp://host:5672", "amqp://host:5672"),
            ("amqp://:pw@host", "amqp://:***@host"),
            ("not a url", "not a url"),
            ("", ""),
            (
                "postgresql://h/db?user=a&PASSWORD=x#frag",
                "postgresql://h/db?user=a&PASSWORD=***#frag",
            ),
            ("http://h/p?q=1@x:y", "http://h/p?q=1@x:y"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn scrubs_the_password_from_arbitrary_text() {
        let url = "amqp://guest:topsecret@host/%2f";
        assert_eq!(
            scrub_secret("failed to reach amqp://guest:topsecret@host", url),
            "failed to reach amqp://guest:***@host"
        );
        assert_eq!(
            scrub_secret("no secret here", "amqp://host"),
            "no secret here"
        );
    }

    #[test]
    fn open_picks_the_bus_from_the_url() {
        let (publisher, local) = open("", "", TlsFiles::default(), &[]).expect("in-process");
        assert_eq!(publisher.kind(), "in-process");
        assert!(local.is_some());

        let (publisher, local) = open(
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "x",
            TlsFiles::default(),
            &[],
        )
        .expect("rabbitmq");
        assert_eq!(publisher.kind(), "rabbitmq");
        assert!(local.is_none());

        let err = open("kafka://u:pw@host", "x", TlsFiles::default(), &[])
            .err()
            .expect("refused");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}
