//! `attune-sensor rule test`: evaluates one rule against a payload and explains why it
//! matches or not, without storing anything.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use attune_actors::conditions::{CompiledConditions, Explanation};
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
    })
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
pub fn evaluate(
    rule: &RuleUnderTest,
    payload: Value,
    explain: bool,
    as_json: bool,
) -> Result<Verdict, RuleTestError> {
    let compiled = CompiledConditions::compile(&rule.conditions)
        .map_err(|e| RuleTestError::Rule(format!("rule {}: conditions: {e}", rule.r#ref)))?;
    let context = json!({
        "payload": payload,
        "trigger": {"ref": rule.trigger_ref},
        "sensor": null,
        "event": {"id": 0, "created": chrono::Utc::now().to_rfc3339()},
    });
    let explanation: Explanation = compiled.explain(&context);
    let matched = explanation.matched;
    let output = if as_json {
        let report = json!({
            "rule_ref": rule.r#ref,
            "trigger_ref": rule.trigger_ref,
            "matched": matched,
            "condition": compiled.top_level(),
            "explanation": explanation,
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
        }
        text
    };
    Ok(Verdict {
        code: if matched { MATCHED } else { NOT_MATCHED },
        output,
    })
}
