//! The `cluster` section: who this instance is among those sharing a database.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::Seconds;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This instance's id; default: host name, pid and a short random suffix.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Free-form labels (`{zone: a, host: build-01}`), shown in `GET /cluster`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An instance whose heartbeat is older than this is dead; leases last this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Seconds,
}

fn default_lease_ttl() -> Seconds {
    Seconds(std::time::Duration::from_secs(15))
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            instance_id: None,
            labels: BTreeMap::new(),
            lease_ttl: default_lease_ttl(),
        }
    }
}

/// The machine's host name (`unknown` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl ClusterSettings {
    /// The configured id, or `<host>-<pid>-<6 random hex digits>`: unique per process
    /// even when a restarted process gets the same pid.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{}-{}", host_name(), std::process::id(), &suffix[..6])
        })
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(id) = &self.instance_id
            && (id.is_empty() || id.len() > 200 || id.chars().any(char::is_whitespace))
        {
            return Err(format!(
                "must be 1 to 200 characters without spaces, got '{id}'"
            ));
        }
        if self.lease_ttl.0 < std::time::Duration::from_secs(1) {
            return Err(format!(
                "cluster.lease_ttl must be at least 1s, got {:?}",
                self.lease_ttl.0
            ));
        }
        Ok(())
    }
}
