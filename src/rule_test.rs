//! `attune-sensor rule test`: evaluates one rule against a payload and explains why it
//! matches or not, without storing anything.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use attune_actors::conditions::{CompiledConditions, Explanation};
use attune_actors::domain::{Id, Throttle, ThrottleStep, ThrottleWindow, decide};
use attune_actors::grouping::FieldValues;
use attune_actors::ports::Store;

use crate::packs;

/// Exit codes of `rule test`.
pub const MATCHED: u8 = 0;
pub const NOT_MATCHED: u8 = 1;
pub const INVALID: u8 = 2;

/// Where the rule comes from.
pub enum RuleSource {
    /// A rule YAML file in the pack format.
    File(PathBuf),
    /// A rule ref, read from the configured database.
    Stored(String),
}

/// A rule ready to test: its ref, trigger and conditions.
#[derive(Debug, Clone)]
pub struct RuleUnderTest {
    pub r#ref: String,
    pub trigger_ref: String,
    pub conditions: Value,
    pub throttle: Option<Throttle>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleTestError {
    #[error("{0}")]
    Rule(String),
    #[error("--payload: {0}")]
    Payload(String),
}

/// The pack a rule file belongs to: the `ref` of `../pack.yaml` next to its `rules/`
/// directory, or `local` for a file outside any pack.
fn pack_of(file: &Path) -> String {
    let pack_yaml = file
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|name| name == "rules"))
        .and_then(Path::parent)
        .map(|pack| pack.join("pack.yaml"));
    pack_yaml
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_norway::from_str::<Value>(&text).ok())
        .and_then(|pack| pack.get("ref").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "local".to_owned())
}

pub fn rule_from_file(file: &Path) -> Result<RuleUnderTest, RuleTestError> {
    let rule = packs::read_rule_file(file, &pack_of(file))
        .map_err(|e| RuleTestError::Rule(e.to_string()))?;
    Ok(RuleUnderTest {
        r#ref: rule.r#ref,
        trigger_ref: rule.trigger_ref,
        conditions: rule.conditions,
        throttle: rule.throttle,
    })
}

pub async fn rule_from_store(
    store: &dyn Store,
    rule_ref: &str,
) -> Result<RuleUnderTest, RuleTestError> {
    let rule = store
        .rule_by_ref(rule_ref)
        .await
        .map_err(|e| RuleTestError::Rule(format!("cannot read rule '{rule_ref}': {e}")))?
        .ok_or_else(|| RuleTestError::Rule(format!("unknown rule '{rule_ref}'")))?;
    Ok(RuleUnderTest {
        r#ref: rule.r#ref,
        trigger_ref: rule.trigger_ref,
        conditions: rule.conditions,
        throttle: rule.throttle,
    })
}

/// The evaluation context of a payload tested as a system event of the rule's trigger.
fn context_of(rule: &RuleUnderTest, payload: Value) -> Value {
    json!({
        "payload": payload,
        "trigger": {"ref": rule.trigger_ref},
        "sensor": null,
        "event": {"id": 0, "created": chrono::Utc::now().to_rfc3339()},
    })
}

/// The throttle group the payload falls in, when the rule is throttled.
pub fn group_of(rule: &RuleUnderTest, payload: &Value) -> Result<Option<String>, RuleTestError> {
    let Some(throttle) = &rule.throttle else {
        return Ok(None);
    };
    let group_by = FieldValues::compile(&throttle.group_by, "throttle.group_by")
        .map_err(|e| RuleTestError::Rule(format!("rule {}: {e}", rule.r#ref)))?;
    Ok(Some(group_by.group(&context_of(rule, payload.clone()))))
}

/// What the rule's throttle would do with a match now: `window` is the group's stored
/// window when the database was consulted (`None`: it was not).
fn throttle_report(
    throttle: &Throttle,
    group: &str,
    window: Option<Option<ThrottleWindow>>,
) -> (Value, String) {
    let mut text = format!(
        "throttle: {} {}s, group {group}{}\n",
        throttle.mode.as_str(),
        throttle.window_secs,
        if throttle.group_by.is_empty() {
            String::new()
        } else {
            format!(" (group_by {})", throttle.group_by.join(", "))
        }
    );
    let outcome = match window {
        None => {
            text.push_str("  window state not consulted (a rule file; test --rule REF against the database to see it)\n");
            "unknown"
        }
        Some(stored) => {
            let now = chrono::Utc::now();
            let step = decide(
                throttle.mode,
                throttle.window(),
                stored.as_ref(),
                Id::MAX,
                now,
            );
            let (outcome, why) = match step {
                ThrottleStep::EnforceNow(_) => ("enforce", "no window is open for this group: the match creates an enforcement and opens one".to_owned()),
                ThrottleStep::Hold(_) => ("hold", "no window is open for this group: the match opens one, and its enforcement goes out when the window ends".to_owned()),
                ThrottleStep::CloseThenHold { .. } => ("hold", "the group's last window has ended (its enforcement goes out now); the match opens the next one".to_owned()),
                ThrottleStep::Suppress(_) | ThrottleStep::AlreadyCounted => {
                    let (counted, closes) =
                        stored.map_or((0, String::new()), |w| (w.matched, w.closes.to_rfc3339()));
                    ("suppress", format!("a window is open for this group until {closes} with {counted} match(es): the match is suppressed"))
                }
            };
            text.push_str(&format!("  {why}\n"));
            outcome
        }
    };
    let report = json!({
        "mode": throttle.mode.as_str(),
        "window_secs": throttle.window_secs,
        "group_by": throttle.group_by,
        "group": serde_json::from_str::<Value>(group).unwrap_or(Value::Null),
        "outcome": outcome,
    });
    (report, text)
}

/// Parses `--payload`: inline JSON, or `@FILE` to read it from a file.
pub fn parse_payload(argument: &str) -> Result<Value, RuleTestError> {
    let (text, origin) = match argument.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| RuleTestError::Payload(format!("cannot read {path}: {e}")))?,
            path.to_owned(),
        ),
        None => (argument.to_owned(), "the argument".to_owned()),
    };
    serde_json::from_str(&text)
        .map_err(|e| RuleTestError::Payload(format!("{origin} is not valid JSON: {e}")))
}

/// The outcome of a test: the exit code and what to print.
pub struct Verdict {
    pub code: u8,
    pub output: String,
}

/// Evaluates `rule` against `payload` as if it were an event of the rule's trigger with no
/// sensor (a system event).
///
/// For a throttled rule `window` is the payload's group window as stored (`Some`), or
/// `None` when the database was not consulted; the report says what the throttle would
/// do with the match.
pub fn evaluate(
    rule: &RuleUnderTest,
    payload: Value,
    window: Option<Option<ThrottleWindow>>,
    explain: bool,
    as_json: bool,
) -> Result<Verdict, RuleTestError> {
    let compiled = CompiledConditions::compile(&rule.conditions)
        .map_err(|e| RuleTestError::Rule(format!("rule {}: conditions: {e}", rule.r#ref)))?;
    let group = group_of(rule, &payload)?;
    let context = context_of(rule, payload);
    let explanation: Explanation = compiled.explain(&context);
    let matched = explanation.matched;
    let throttle = match (&rule.throttle, &group) {
        (Some(throttle), Some(group)) if matched => Some(throttle_report(throttle, group, window)),
        _ => None,
    };
    let output = if as_json {
        let report = json!({
            "rule_ref": rule.r#ref,
            "trigger_ref": rule.trigger_ref,
            "matched": matched,
            "condition": compiled.top_level(),
            "explanation": explanation,
            "throttle": throttle.as_ref().map(|(report, _)| report),
        });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )
    } else {
        let verdict = if matched { "MATCHED" } else { "NOT MATCHED" };
        let mut text = format!("rule {}: {verdict}\n", rule.r#ref);
        if explain {
            text.push_str(&explanation.render_tree());
            if let Some((_, throttle)) = &throttle {
                text.push_str(throttle);
            }
        }
        text
    };
    Ok(Verdict {
        code: if matched { MATCHED } else { NOT_MATCHED },
        output,
    })
}
