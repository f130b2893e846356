//! The built-in webhook sensor: `runtime: builtin`, `entrypoint: webhook`, config
//! `{path, secret_env? | secret_file?, token_env? | token_file?, max_body_bytes?,
//! rate_limit_per_second?, require_json?}`.
//! While it runs, `POST /webhooks/{path}` on the webhook listener becomes its events
//! (see [`crate::webhook`]).

use async_trait::async_trait;
use attune_actors::ports::DetectionSink;
use attune_actors::ports::{SensorDriver, SensorFailure};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::SensorConfigError;
use super::schedule::refuse_unknown_keys;
use crate::webhook::{Dedup, Secret, TokenBucket, WebhookAuth, WebhookRegistry, WebhookRoute};

pub const ENTRYPOINT: &str = "webhook";

/// 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// The largest `max_body_bytes` a webhook may set: every body is held in memory until
/// its event is stored, so the limit bounds memory per request.
pub const MAX_BODY_BYTES_CEILING: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Without leading or trailing `/`.
    pub path: String,
    pub secret: Option<SecretSource>,
    pub token: Option<SecretSource>,
    pub max_body_bytes: usize,
    pub rate_limit_per_second: Option<f64>,
    pub require_json: bool,
    /// Headers kept out of the payload besides the built-in credential headers.
    pub drop_headers: Vec<String>,
    /// A header (lower case) that names each delivery, such as `x-github-delivery`: a
    /// repeat of its value within `dedup.window` stores nothing.
    pub dedup_header: Option<String>,
}

/// Where a webhook secret is read from when the sensor starts.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// An environment variable's name (`*_env`).
    Env(String),
    /// A file's path (`*_file`), e.g. a mounted container secret.
    File(PathBuf),
}

/// `secret_env` / `secret_file` (or `token_*`): one of them at most.
fn secret_source(config: &Value, what: &str) -> Result<Option<SecretSource>, SensorConfigError> {
    let env_key = format!("{what}_env");
    let file_key = format!("{what}_file");
    let env = env_name(config, &env_key)?;
    let file = match config.get(&file_key) {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) if !path.is_empty() => Some(PathBuf::from(path)),
        Some(other) => {
            return Err(SensorConfigError(format!(
                "config.{file_key} must be a file path, got {other}"
            )));
        }
    };
    match (env, file) {
        (Some(_), Some(_)) => Err(SensorConfigError(format!(
            "config.{env_key} and config.{file_key} are both set; use one"
        ))),
        (Some(name), None) => Ok(Some(SecretSource::Env(name))),
        (None, Some(path)) => Ok(Some(SecretSource::File(path))),
        (None, None) => Ok(None),
    }
}

fn env_name(config: &Value, key: &str) -> Result<Option<String>, SensorConfigError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name))
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(Some(name.clone()))
        }
        Some(other) => Err(SensorConfigError(format!(
            "config.{key} must name an environment variable (letters, digits, '_'), got {other}"
        ))),
    }
}

impl WebhookConfig {
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        refuse_unknown_keys(
            config,
            &[
                "path",
                "secret_env",
                "secret_file",
                "token_env",
                "token_file",
                "max_body_bytes",
                "rate_limit_per_second",
                "require_json",
                "drop_headers",
                "dedup_header",
            ],
            ENTRYPOINT,
        )?;
        let path = match config.get("path") {
            Some(Value::String(path)) => path.trim_matches('/').to_owned(),
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.path must be a string, got {other}"
                )));
            }
            None => return Err(SensorConfigError("config.path is required".into())),
        };
        if path.is_empty()
            || path.split('/').any(str::is_empty)
            || !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
        {
            return Err(SensorConfigError(format!(
                "config.path '{path}' is not a valid webhook path (letters, digits, '-', '_' and '/' between non-empty segments)"
            )));
        }
        let max_body_bytes = match config.get("max_body_bytes") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(value) => value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_BODY_BYTES_CEILING).contains(n))
                .ok_or_else(|| {
                    SensorConfigError(format!(
                        "config.max_body_bytes must be a whole number from 1 to {MAX_BODY_BYTES_CEILING}, got {value}"
                    ))
                })?,
        };
        let rate_limit_per_second = match config.get("rate_limit_per_second") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_f64()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| {
                        SensorConfigError(format!(
                            "config.rate_limit_per_second must be a positive number, got {value}"
                        ))
                    })?,
            ),
        };
        let require_json = match config.get("require_json") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.require_json must be true or false, got {other}"
                )));
            }
        };
        let drop_headers = match config.get("drop_headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| match name {
                    Value::String(name)
                        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok() =>
                    {
                        Ok(name.to_ascii_lowercase())
                    }
                    other => Err(SensorConfigError(format!(
                        "config.drop_headers must list header names, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.drop_headers must be a list of header names, got {other}"
                )));
            }
        };
        let dedup_header = match config.get("dedup_header") {
            None | Some(Value::Null) => None,
            Some(Value::String(name))
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok() =>
            {
                Some(name.to_ascii_lowercase())
            }
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.dedup_header must be a header name such as X-GitHub-Delivery, got {other}"
                )));
            }
        };
        Ok(Self {
            drop_headers,
            dedup_header,
            path,
            secret: secret_source(config, "secret")?,
            token: secret_source(config, "token")?,
            max_body_bytes,
            rate_limit_per_second,
            require_json,
        })
    }
}

/// Reads a secret at sensor start; its value is never logged nor stored, only the
/// variable's name or the file's path appears in errors.
fn read_secret(what: &str, source: &Option<SecretSource>) -> Result<Option<Secret>, SensorFailure> {
    match source {
        None => Ok(None),
        Some(SecretSource::Env(name)) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
            _ => Err(SensorFailure::new(format!(
                "config.{what}_env: environment variable {name} is not set (or empty)"
            ))),
        },
        Some(SecretSource::File(path)) => crate::secrets::read_secret_file(path)
            .map(|value| Some(Secret::new(value)))
            .map_err(|reason| {
                SensorFailure::new(format!(
                    "config.{what}_file: cannot read {}: {reason}",
                    path.display()
                ))
            }),
    }
}

pub struct WebhookSensor {
    config: WebhookConfig,
    registry: Arc<WebhookRegistry>,
    /// How long a `dedup_header` value is remembered (`dedup.window`).
    dedup_window: Duration,
    /// How long a request waits for its event to be stored (`pipeline.answer_timeout`).
    answer_timeout: Duration,
}

impl WebhookSensor {
    pub fn new(
        config: WebhookConfig,
        registry: Arc<WebhookRegistry>,
        dedup_window: Duration,
        answer_timeout: Duration,
    ) -> Self {
        Self {
            config,
            registry,
            dedup_window,
            answer_timeout,
        }
    }
}

#[async_trait]
impl SensorDriver for WebhookSensor {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let auth = WebhookAuth {
            hmac_secret: read_secret("secret", &self.config.secret)?,
            bearer_token: read_secret("token", &self.config.token)?,
        };
        let route = WebhookRoute {
            sensor_ref: sink.sensor().r#ref.clone(),
            auth,
            max_body_bytes: self.config.max_body_bytes,
            require_json: self.config.require_json,
            dedup: self.config.dedup_header.clone().map(|header| Dedup {
                header,
                window: self.dedup_window,
            }),
            answer_timeout: self.answer_timeout,
            limiter: self
                .config
                .rate_limit_per_second
                .map(TokenBucket::per_second),
            drop_headers: self.config.drop_headers.clone(),
            sink: sink.clone(),
        };
        // Dropping the registration (when this future is dropped on stop) frees the path.
        let _registration = self
            .registry
            .register(&self.config.path, route)
            .map_err(|e| SensorFailure::new(e.to_string()))?;
        tracing::info!(sensor = %sink.sensor().r#ref, path = %self.config.path, "webhook registered");
        sink.stopping().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_refuses_with_the_field() {
        let config =
            WebhookConfig::parse(&json!({"path": "/github/push/", "secret_env": "GH_SECRET"}))
                .unwrap();
        assert_eq!(config.path, "github/push");
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let err = |v: Value| WebhookConfig::parse(&v).unwrap_err().0;
        assert!(err(json!({})).contains("config.path is required"));
        assert!(err(json!({"path": "a b"})).contains("config.path 'a b'"));
        assert!(err(json!({"path": "a//b"})).contains("config.path"));
        assert!(err(json!({"path": "/"})).contains("config.path"));
        assert!(err(json!({"path": "a", "secret_env": "no-dash"})).contains("config.secret_env"));
        assert!(err(json!({"path": "a", "max_body_bytes": 0})).contains("config.max_body_bytes"));
        let too_big = json!({"path": "a", "max_body_bytes": MAX_BODY_BYTES_CEILING + 1});
        assert!(err(too_big).contains("from 1 to 16777216"));
        assert!(
            err(json!({"path": "a", "rate_limit_per_second": -1}))
                .contains("config.rate_limit_per_second")
        );
        assert!(err(json!({"path": "a", "secret": "x"})).contains("config.secret"));
        assert!(
            err(json!({"path": "a", "token_env": "T", "token_file": "/t"})).contains("both set")
        );
    }

    #[test]
    fn secrets_come_from_files_and_a_missing_file_names_key_and_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").expect("write");
        let config = WebhookConfig::parse(
            &json!({"path": "a", "token_file": file, "secret_file": dir.path().join("nope")}),
        )
        .expect("parses");
        assert_eq!(config.token, Some(SecretSource::File(file.clone())));
        let token = read_secret("token", &config.token)
            .expect("reads")
            .expect("set");
        assert_eq!(token.as_bytes(), b"t0ken");
        let error = read_secret("secret", &config.secret)
            .expect_err("missing")
            .0;
        assert!(
            error.contains("config.secret_file") && error.contains("nope"),
            "{error}"
        );
    }
}
