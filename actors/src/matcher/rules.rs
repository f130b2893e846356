//! A rule as the matcher keeps it: conditions, throttle and action parameters compiled
//! once per trigger, then applied to each event.

use crate::conditions::CompiledConditions;
use crate::domain::{Rule, Throttle, ThrottleClaim};
use crate::grouping::FieldValues;
use crate::params::ActionParams;

pub(super) struct CompiledRule {
    pub rule: Rule,
    pub conditions: CompiledConditions,
    /// The rule's throttle with its `group_by` compiled.
    throttle: Option<(Throttle, FieldValues)>,
    /// `Err` holds why the stored parameters do not compile: every enforcement of the
    /// rule is then `failed` with it (the pack loader refuses such rules, so only rows
    /// written some other way get here).
    params: Option<Result<ActionParams, String>>,
}

impl CompiledRule {
    /// Compiles a stored rule; `None` (logged) when its conditions or throttle do not
    /// compile, so one broken rule never stops the others.
    pub fn compile(rule: Rule) -> Option<Self> {
        let conditions = CompiledConditions::compile(&rule.conditions)
            .map_err(|e| format!("its conditions are invalid: {e}"));
        let throttle = rule
            .throttle
            .clone()
            .map(|throttle| {
                FieldValues::compile(&throttle.group_by, "throttle.group_by")
                    .map(|group_by| (throttle, group_by))
                    .map_err(|e| format!("its throttle is invalid: {e}"))
            })
            .transpose();
        match (conditions, throttle) {
            (Ok(conditions), Ok(throttle)) => {
                let params = rule.action_params.as_ref().map(ActionParams::compile);
                Some(Self {
                    rule,
                    conditions,
                    throttle,
                    params,
                })
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(rule = %rule.r#ref, %error, "rule skipped");
                None
            }
        }
    }

    /// The throttle claim of a match: the rule's throttle and the event's group.
    pub fn claim(&self, context: &serde_json::Value) -> Option<ThrottleClaim> {
        self.throttle
            .as_ref()
            .map(|(throttle, group_by)| ThrottleClaim {
                mode: throttle.mode,
                window_secs: throttle.window_secs,
                group: group_by.group(context),
            })
    }

    /// The rule's parameters rendered for one event: `(params, error)`.
    pub fn render(
        &self,
        context: &serde_json::Value,
    ) -> (Option<serde_json::Value>, Option<String>) {
        match &self.params {
            None => (None, None),
            Some(Err(error)) => (None, Some(error.clone())),
            Some(Ok(params)) => match params.render(context) {
                Ok(rendered) => (Some(rendered), None),
                Err(error) => (None, Some(error)),
            },
        }
    }
}
