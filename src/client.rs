//! The CLI's client half: commands that talk to a running service's admin API.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {url}: {source} (is the service running? see --admin)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("unexpected answer from {url}: {source}")]
    BadAnswer {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from {url}: not JSON: {error}")]
    NotJson { url: String, error: String },
}

pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| ClientError::BadAnswer {
                url: self.base.clone(),
                source,
            })?;
        let body: Value = match serde_json::from_str(&text) {
            Ok(body) => body,
            // Something else answered (a proxy, or axum for a wrong method): say what.
            Err(_) if !status.is_success() => {
                return Err(ClientError::Refused {
                    status,
                    message: if text.trim().is_empty() {
                        "(no message)".to_owned()
                    } else {
                        text.trim().to_owned()
                    },
                });
            }
            Err(error) => {
                return Err(ClientError::NotJson {
                    url: self.base.clone(),
                    error: error.to_string(),
                });
            }
        };
        if status.is_success()
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE && body.get("ready").is_some()
        {
            return Ok(body);
        }
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        Err(ClientError::Refused { status, message })
    }
}

/// The `status` command's table: one line per sensor, then the pipeline and the outbox.
pub fn render_status(status: &Value) -> String {
    let mut out = String::new();
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    out.push_str(&format!(
        "{:<40} {:<9} {:>8} {:>8} {:>8}  {:<25} {}\n",
        "SENSOR", "STATE", "FAILURES", "RESTARTS", "EVENTS", "LAST EVENT", "LAST ERROR"
    ));
    for sensor in status["sensors"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<40} {:<9} {:>8} {:>8} {:>8}  {:<25} {}\n",
            text(&sensor["sensor_ref"]),
            text(&sensor["state"]),
            text(&sensor["failure_count"]),
            text(&sensor["restart_count"]),
            text(&sensor["events_emitted"]),
            text(&sensor["last_event_at"]),
            text(&sensor["last_error"]),
        ));
    }
    for actor in status["pipeline"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "pipeline {:<20} {:<10} restarts={} last_error={}\n",
            text(&actor["name"]),
            text(&actor["state"]),
            text(&actor["restart_count"]),
            text(&actor["last_error"]),
        ));
    }
    let outbox = &status["outbox"];
    out.push_str(&format!(
        "outbox backlog={} parked={} bus={} connected={} publishing={} last_error={}\n",
        text(&outbox["backlog"]),
        text(&outbox["parked"]),
        text(&outbox["bus"]),
        text(&outbox["connected"]),
        text(&outbox["publishing"]),
        text(&outbox["last_error"]),
    ));
    out
}

/// The `status` command's cluster table (`GET /cluster`): one line per instance.
pub fn render_cluster(cluster: &Value) -> String {
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = format!(
        "\n{:<44} {:<6} {:>9} {:<9} {:<20} {}\n",
        "INSTANCE", "ALIVE", "HEARTBEAT", "VERSION", "LEASES", "LABELS"
    );
    for instance in cluster["instances"].as_array().into_iter().flatten() {
        let marker = if instance["this"] == true { " *" } else { "" };
        let leases: Vec<String> = instance["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let labels: Vec<String> = instance["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        out.push_str(&format!(
            "{:<44} {:<6} {:>8.1}s {:<9} {:<20} {}\n",
            format!("{}{marker}", text(&instance["id"])),
            text(&instance["alive"]),
            instance["heartbeat_age_secs"].as_f64().unwrap_or(f64::NAN),
            text(&instance["version"]),
            if leases.is_empty() {
                "-".to_owned()
            } else {
                leases.join(",")
            },
            labels.join(","),
        ));
    }
    out
}
