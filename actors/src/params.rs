//! A rule's `action_params`: a map whose string values may be templates over the event
//! (`"{{ payload.branch }}"`, `"{{ trigger.ref }}"`, filters such as `default` and
//! `tojson`), rendered with minijinja — the Jinja dialect StackStorm users know — when an
//! enforcement is created. Templates are compiled once per rule; one that does not parse
//! is refused when the pack loads; one that fails when rendered (an undefined field without
//! `default`, a filter error) makes a `failed` enforcement with the error, never a lost
//! match.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

/// A rule's parameters, checked and ready to render.
#[derive(Debug)]
pub struct ActionParams {
    template: Value,
    environment: Environment<'static>,
}

fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    // An undefined field is an error unless a `default` catches it: a missing value
    // should not quietly become an empty string in an action's parameters.
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment
}

/// Every string in `value` (keys excepted), with its JSON pointer.
fn strings<'v>(value: &'v Value, pointer: String, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::String(text) => out.push((pointer, text)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                strings(item, format!("{pointer}/{key}"), out);
            }
        }
        _ => {}
    }
}

impl ActionParams {
    /// Checks that `params` is a map and that every template in it parses; the error
    /// names the JSON pointer of the bad one.
    pub fn compile(params: &Value) -> Result<Self, String> {
        if !params.is_object() {
            return Err(format!("action_params must be a map, got {params}"));
        }
        let environment = environment();
        let mut found = Vec::new();
        strings(params, String::new(), &mut found);
        for (pointer, text) in found {
            environment
                .template_from_str(text)
                .map_err(|e| format!("action_params at '{pointer}': {e}"))?;
        }
        Ok(Self {
            template: params.clone(),
            environment,
        })
    }

    /// The parameters with every template rendered against `context` (the event as the
    /// condition engine sees it: `payload`, `trigger`, `sensor`, `event`).
    pub fn render(&self, context: &Value) -> Result<Value, String> {
        let context = minijinja::Value::from(minijinja::value::Serde(context));
        self.render_value(&self.template, &context, "")
    }

    fn render_value(
        &self,
        value: &Value,
        context: &minijinja::Value,
        pointer: &str,
    ) -> Result<Value, String> {
        Ok(match value {
            Value::String(text) if text.contains("{{") || text.contains("{%") => {
                let rendered = self
                    .environment
                    .render_str(text, context)
                    .map_err(|e| format!("action_params at '{pointer}': {e}"))?;
                Value::String(rendered)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.render_value(item, context, &format!("{pointer}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (key, item) in map {
                    out.insert(
                        key.clone(),
                        self.render_value(item, context, &format!("{pointer}/{key}"))?,
                    );
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "payload": {"branch": "main", "commits": [{"id": "abc"}], "n": 3},
            "trigger": {"ref": "github.push"},
            "sensor": null,
            "event": {"id": 7}
        })
    }

    #[test]
    fn templates_render_over_the_event_with_filters() {
        let params = ActionParams::compile(&json!({
            "branch": "{{ payload.branch }}",
            "source": "{{ trigger.ref }} #{{ event.id }}",
            "owner": "{{ payload.owner | default('nobody') }}",
            "commits": "{{ payload.commits | tojson }}",
            "fixed": 42,
            "list": ["{{ payload.n + 1 }}", "plain"]
        }))
        .expect("compiles");
        let rendered = params.render(&context()).expect("renders");
        assert_eq!(rendered["branch"], "main");
        assert_eq!(rendered["source"], "github.push #7");
        assert_eq!(rendered["owner"], "nobody");
        assert_eq!(rendered["commits"], r#"[{"id": "abc"}]"#);
        assert_eq!(rendered["fixed"], 42);
        assert_eq!(rendered["list"], json!(["4", "plain"]));
    }

    #[test]
    fn a_bad_template_is_refused_and_a_failing_one_reports_where() {
        let error = ActionParams::compile(&json!({"a": {"b": "{{ payload.branch"}})).unwrap_err();
        assert!(error.contains("'/a/b'"), "{error}");
        assert!(ActionParams::compile(&json!(["not", "a", "map"])).is_err());
        let params =
            ActionParams::compile(&json!({"x": "{{ payload.missing.deeper }}"})).expect("parses");
        let error = params.render(&context()).unwrap_err();
        assert!(error.contains("'/x'"), "{error}");
    }

    #[test]
    fn default_covers_the_last_step_of_a_path() {
        let render = |template: &str| {
            ActionParams::compile(&json!({"v": template}))
                .expect("parses")
                .render(&context())
                .map(|v| v["v"].clone())
        };
        assert!(render("{{ payload.pusher.name | default('x') }}").is_err());
        assert_eq!(
            render("{{ (payload.pusher | default({})).name | default('x') }}"),
            Ok(json!("x"))
        );
    }
}
