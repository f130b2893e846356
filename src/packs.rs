//! Pack loading: a pack is a directory with `pack.yaml`, `triggers/*.yaml`,
//! `sensors/*.yaml` and `rules/*.yaml`. Loading validates everything first and then
//! upserts the pack in one transaction, so a bad pack changes nothing.

use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use attune_actors::conditions::CompiledConditions;
use attune_actors::domain::{
    PackDefinition, PackUpsertSummary, Placement, PlacementMode, RuleDefinition, SensorDefinition,
    TriggerDefinition,
};
use attune_actors::ports::{Store, StoreError};

use crate::pack_limits::{DedupFile, PlacementFile, ThrottleFile};
use crate::runtimes;

/// A refused pack, naming the file and (where it applies) the field.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{}: {}{message}", file.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        field: Option<String>,
        message: String,
    },
    #[error("pack {pack}: {source}")]
    Store {
        pack: String,
        #[source]
        source: StoreError,
    },
}

fn invalid(file: &Path, field: Option<&str>, message: impl Into<String>) -> PackError {
    PackError::Invalid {
        file: file.to_owned(),
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    r#ref: String,
    label: Option<String>,
    description: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerFile {
    r#ref: String,
    label: Option<String>,
    description: Option<String>,
    param_schema: Option<Value>,
    payload_schema: Option<Value>,
    /// `false`: `payload_schema` documents payloads but is not enforced.
    #[serde(default = "enforced")]
    validate_payloads: bool,
    /// Stores an event only if none with the same key values was stored within the window.
    dedup: Option<DedupFile>,
}

fn enforced() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorFile {
    r#ref: String,
    label: Option<String>,
    description: Option<String>,
    runtime: String,
    entrypoint: String,
    trigger: String,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    poll_interval: Option<i64>,
    param_schema: Option<Value>,
    config: Option<Value>,
    /// `poll` (default) or `stream`, for process sensors.
    mode: Option<String>,
    /// Environment variables the sensor process may see besides the fixed ones.
    #[serde(default)]
    pass_env: Vec<String>,
    /// Like a trigger's `dedup`, for this sensor's events (it wins over the trigger's).
    dedup: Option<DedupFile>,
    /// Where it runs when several instances share the database.
    placement: Option<PlacementFile>,
}

/// A rule as written in a pack's `rules/*.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub r#ref: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub trigger: String,
    pub action: String,
    pub conditions: Option<Value>,
    /// Parameters for the action; string values may be templates over the event.
    pub action_params: Option<Value>,
    /// At most one enforcement per group and window.
    pub throttle: Option<ThrottleFile>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

fn parse_yaml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, PackError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| invalid(file, None, format!("cannot read: {e}")))?;
    serde_norway::from_str(&text).map_err(|e| invalid(file, None, e.to_string()))
}

/// The `*.yaml` / `*.yml` files of a pack subdirectory, sorted by name; none when the
/// directory does not exist.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| invalid(dir, None, format!("cannot list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| invalid(dir, None, format!("cannot list: {e}")))?
            .path();
        if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A digest of the code in a pack's `sensors/` directory and its subdirectories: every
/// file but the YAML definitions, by relative path and content, in path order. A process sensor's entrypoint and
/// whatever it imports from beside it are in there, so editing any of them changes the
/// digest, and with it the sensor's definition.
fn code_digest(dir: &Path) -> Result<String, PackError> {
    use sha2::{Digest, Sha256};
    // Subdirectories too (an entrypoint may be `lib/sensor.py`), by relative path.
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(current) = dirs.pop() {
        let entries = std::fs::read_dir(&current)
            .map_err(|e| invalid(&current, None, format!("cannot list: {e}")))?;
        for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.is_file()
                && !matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let content =
            std::fs::read(&file).map_err(|e| invalid(&file, None, format!("cannot read: {e}")))?;
        let name = file.strip_prefix(dir).unwrap_or(&file).to_string_lossy();
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The full ref `<pack>.<name>` of a short name written in a pack file. A name already
/// prefixed with its own pack is accepted as is.
fn full_ref(pack: &str, name: &str, file: &Path) -> Result<String, PackError> {
    let short = name.strip_prefix(&format!("{pack}.")).unwrap_or(name);
    if !is_name(short) {
        return Err(invalid(
            file,
            Some("ref"),
            format!(
                "'{name}' is not a valid name (letters, digits, '_' and '-'; the pack prefix is added for you)"
            ),
        ));
    }
    Ok(format!("{pack}.{short}"))
}

fn check_full_ref(value: &str, file: &Path, field: &str) -> Result<(), PackError> {
    match value.split_once('.') {
        Some((pack, name)) if is_name(pack) && !name.is_empty() => Ok(()),
        _ => Err(invalid(
            file,
            Some(field),
            format!("'{value}' is not a full ref (expected <pack>.<name>)"),
        )),
    }
}

/// Validates a rule file's fields; the pack loader and `rule test --rule` share it.
pub fn rule_definition(
    pack: &str,
    rule: RuleFile,
    file: &Path,
) -> Result<RuleDefinition, PackError> {
    let r#ref = full_ref(pack, &rule.r#ref, file)?;
    check_full_ref(&rule.trigger, file, "trigger")?;
    check_full_ref(&rule.action, file, "action")?;
    let conditions = rule.conditions.unwrap_or(Value::Null);
    CompiledConditions::compile(&conditions)
        .map_err(|e| invalid(file, Some("conditions"), format!("rule {ref}: {e}")))?;
    if let Some(params) = &rule.action_params {
        attune_actors::params::ActionParams::compile(params)
            .map_err(|e| invalid(file, Some("action_params"), format!("rule {ref}: {e}")))?;
    }
    let throttle = rule
        .throttle
        .map(ThrottleFile::into_throttle)
        .transpose()
        .map_err(|e| invalid(file, Some("throttle"), format!("rule {ref}: {e}")))?;
    Ok(RuleDefinition {
        label: rule.label.unwrap_or_else(|| r#ref.clone()),
        r#ref,
        description: rule.description,
        trigger_ref: rule.trigger,
        action_ref: rule.action,
        conditions,
        action_params: rule.action_params,
        throttle,
        enabled: rule.enabled,
    })
}

/// Reads a rule file on its own (for `rule test --rule`), with `pack` as its pack.
pub fn read_rule_file(file: &Path, pack: &str) -> Result<RuleDefinition, PackError> {
    rule_definition(pack, parse_yaml(file)?, file)
}

/// A validated pack and the file each of its entities came from.
#[derive(Debug, Clone)]
pub struct LoadedPack {
    pub definition: PackDefinition,
    pub files: HashMap<String, PathBuf>,
}

/// Reads and validates a pack directory without touching the database.
pub fn read_pack(dir: &Path) -> Result<LoadedPack, PackError> {
    let pack_file = dir.join("pack.yaml");
    if !pack_file.is_file() {
        return Err(invalid(
            &pack_file,
            None,
            "missing: a pack directory needs a pack.yaml",
        ));
    }
    let pack: PackFile = parse_yaml(&pack_file)?;
    let pack_path = std::fs::canonicalize(dir)
        .map_err(|e| invalid(dir, None, format!("cannot resolve the pack directory: {e}")))?
        .to_string_lossy()
        .into_owned();
    if !is_name(&pack.r#ref) {
        return Err(invalid(
            &pack_file,
            Some("ref"),
            format!(
                "'{}' is not a valid pack ref (letters, digits, '_' and '-')",
                pack.r#ref
            ),
        ));
    }
    let pack_ref = pack.r#ref.clone();
    let mut definition = PackDefinition {
        label: pack.label.unwrap_or_else(|| pack_ref.clone()),
        r#ref: pack_ref.clone(),
        description: pack.description,
        version: pack.version.unwrap_or_else(|| "0.0.0".to_owned()),
        ..PackDefinition::default()
    };
    let mut files = HashMap::new();
    // Keyed by kind too: a trigger and a sensor may share a name, they live apart.
    let mut unique = |kind: &str, r: &str, file: &Path| match files
        .insert(format!("{kind}:{r}"), file.to_owned())
    {
        None => Ok(()),
        Some(first) => Err(invalid(
            file,
            Some("ref"),
            format!(
                "duplicate {kind} ref '{r}' in pack {pack_ref} (also defined in {})",
                first.display()
            ),
        )),
    };

    for file in yaml_files(&dir.join("triggers"))? {
        let trigger: TriggerFile = parse_yaml(&file)?;
        let r#ref = full_ref(&definition.r#ref, &trigger.r#ref, &file)?;
        unique("trigger", &r#ref, &file)?;
        if let Some(schema) = &trigger.payload_schema {
            crate::schemas::compile(schema)
                .map_err(|e| invalid(&file, Some("payload_schema"), e))?;
        }
        let dedup = trigger
            .dedup
            .map(DedupFile::into_dedup)
            .transpose()
            .map_err(|e| invalid(&file, Some("dedup"), format!("trigger {ref}: {e}")))?;
        definition.triggers.push(TriggerDefinition {
            label: trigger.label.unwrap_or_else(|| r#ref.clone()),
            r#ref,
            description: trigger.description,
            param_schema: trigger.param_schema,
            payload_schema: trigger.payload_schema,
            validate_payloads: trigger.validate_payloads,
            dedup,
        });
    }

    for file in yaml_files(&dir.join("sensors"))? {
        let sensor: SensorFile = parse_yaml(&file)?;
        let r#ref = full_ref(&definition.r#ref, &sensor.r#ref, &file)?;
        unique("sensor", &r#ref, &file)?;
        check_full_ref(&sensor.trigger, &file, "trigger")?;
        if let Some(interval) = sensor.poll_interval
            && interval <= 0
        {
            return Err(invalid(
                &file,
                Some("poll_interval"),
                format!("must be a positive number of seconds, got {interval}"),
            ));
        }
        let config = sensor
            .config
            .unwrap_or_else(|| Value::Object(Default::default()));
        let dedup = sensor
            .dedup
            .map(DedupFile::into_dedup)
            .transpose()
            .map_err(|e| invalid(&file, Some("dedup"), format!("sensor {ref}: {e}")))?;
        // A webhook is passive: every instance serves its path behind a load balancer.
        let default_mode = if sensor.entrypoint == runtimes::webhook::ENTRYPOINT {
            PlacementMode::All
        } else {
            PlacementMode::One
        };
        let placement = match sensor.placement {
            None => Placement {
                mode: default_mode,
                labels: Default::default(),
            },
            Some(file_placement) => file_placement
                .into_placement(default_mode)
                .map_err(|e| invalid(&file, Some("placement"), format!("sensor {ref}: {e}")))?,
        };
        let mut sensor_definition = SensorDefinition {
            label: sensor.label.unwrap_or_else(|| r#ref.clone()),
            r#ref,
            description: sensor.description,
            runtime_ref: sensor.runtime,
            entrypoint: sensor.entrypoint,
            trigger_ref: sensor.trigger,
            enabled: sensor.enabled,
            poll_interval: sensor.poll_interval,
            param_schema: sensor.param_schema,
            config,
            pack_path: Some(pack_path.clone()),
            mode: sensor.mode,
            pass_env: sensor.pass_env,
            code_digest: None,
            dedup,
            placement,
        };
        if runtimes::process::is_process_runtime(&sensor_definition.runtime_ref) {
            sensor_definition.code_digest = Some(code_digest(&dir.join("sensors"))?);
        }
        runtimes::validate(&sensor_definition).map_err(|e| {
            invalid(
                &file,
                Some(e.field),
                format!("sensor {}: {}", sensor_definition.r#ref, e.message),
            )
        })?;
        definition.sensors.push(sensor_definition);
    }

    for file in yaml_files(&dir.join("rules"))? {
        let rule = rule_definition(&definition.r#ref, parse_yaml(&file)?, &file)?;
        unique("rule", &rule.r#ref, &file)?;
        definition.rules.push(rule);
    }
    Ok(LoadedPack { definition, files })
}

/// Validates a pack directory and upserts it. Triggers that sensors and rules name must be
/// defined by the pack or already stored.
pub async fn install_pack(store: &dyn Store, dir: &Path) -> Result<PackUpsertSummary, PackError> {
    let LoadedPack { definition, files } = read_pack(dir)?;
    let now = chrono::Utc::now();
    for sensor in &definition.sensors {
        if sensor.entrypoint != runtimes::date::ENTRYPOINT {
            continue;
        }
        let stored =
            store
                .sensor_by_ref(&sensor.r#ref)
                .await
                .map_err(|source| PackError::Store {
                    pack: definition.r#ref.clone(),
                    source,
                })?;
        runtimes::validate_at_load(sensor, stored.as_ref(), now).map_err(|e| {
            let file = files
                .get(&format!("sensor:{}", sensor.r#ref))
                .cloned()
                .unwrap_or_else(|| dir.to_owned());
            invalid(
                &file,
                Some(e.field),
                format!("sensor {}: {}", sensor.r#ref, e.message),
            )
        })?;
    }
    let local: HashSet<&str> = definition
        .triggers
        .iter()
        .map(|t| t.r#ref.as_str())
        .collect();
    let named = definition
        .sensors
        .iter()
        .map(|s| (&s.trigger_ref, "sensor", &s.r#ref))
        .chain(
            definition
                .rules
                .iter()
                .map(|r| (&r.trigger_ref, "rule", &r.r#ref)),
        );
    for (trigger_ref, kind, owner) in named {
        if local.contains(trigger_ref.as_str()) {
            continue;
        }
        let known = store
            .trigger_by_ref(trigger_ref)
            .await
            .map_err(|source| PackError::Store {
                pack: definition.r#ref.clone(),
                source,
            })?;
        if known.is_none() {
            let file = files
                .get(&format!("{kind}:{owner}"))
                .cloned()
                .unwrap_or_else(|| dir.to_owned());
            return Err(invalid(
                &file,
                Some("trigger"),
                format!(
                    "{owner} names unknown trigger '{trigger_ref}' (define it in triggers/ or load its pack first)"
                ),
            ));
        }
    }
    store
        .upsert_pack(&definition)
        .await
        .map_err(|source| PackError::Store {
            pack: definition.r#ref.clone(),
            source,
        })
}
