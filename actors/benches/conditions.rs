//! Condition engine speed: single operators, a 10-condition nested rule, and a trigger with
//! 1,000 rules evaluated against one event. Targets: a simple comparison under 100 ns, the
//! 1,000-rule trigger under 1 ms.
//!
//! `cargo bench -p attune-actors --bench conditions -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use attune_actors::conditions::CompiledConditions;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn context() -> Value {
    json!({
        "payload": {
            "repository": {"name": "attune", "owner": {"login": "attune-org"}},
            "ref": "refs/heads/main",
            "branch": "main",
            "size": 42,
            "labels": ["bug", "ci", "deploy", "docs"],
            "pushed_at": "2024-06-01T11:59:00Z",
            "commits": (0..20).map(|i| json!({
                "id": format!("c{i:02}"),
                "message": format!("Commit number {i} [skip ci]"),
                "files": i,
                "status": if i == 17 { "failed" } else { "ok" },
            })).collect::<Vec<_>>(),
        },
        "trigger": {"ref": "github.push"},
        "sensor": {"ref": "github.webhook"},
        "event": {"id": 1234, "created": "2024-06-01T11:59:30Z"},
    })
}

fn now() -> DateTime<Utc> {
    "2024-06-01T12:00:00Z".parse().expect("valid timestamp")
}

fn compile(conditions: Value) -> CompiledConditions {
    CompiledConditions::compile(&conditions).expect("valid benchmark conditions")
}

fn single_operators(c: &mut Criterion) {
    let ctx = context();
    let at = now();
    let cases = [
        (
            "equals",
            json!({"field": "payload.branch", "operator": "equals", "value": "main"}),
        ),
        (
            "equals_ignore_case",
            json!({"field": "payload.branch", "operator": "equals", "value": "MAIN", "ignore_case": true}),
        ),
        (
            "not_equals",
            json!({"field": "payload.size", "operator": "not_equals", "value": 7}),
        ),
        (
            "greater_than",
            json!({"field": "payload.size", "operator": "greater_than", "value": 10.5}),
        ),
        (
            "contains_string",
            json!({"field": "payload.ref", "operator": "contains", "value": "heads"}),
        ),
        (
            "contains_array",
            json!({"field": "payload.labels", "operator": "contains", "value": "deploy"}),
        ),
        (
            "starts_with",
            json!({"field": "payload.ref", "operator": "starts_with", "value": "refs/heads/"}),
        ),
        (
            "in",
            json!({"field": "payload.branch", "operator": "in", "value": ["dev", "staging", "main"]}),
        ),
        (
            "matches",
            json!({"field": "payload.ref", "operator": "matches", "value": "^refs/heads/(main|release-.*)$"}),
        ),
        (
            "wildcard",
            json!({"field": "payload.ref", "operator": "wildcard", "value": "refs/*/ma?n"}),
        ),
        (
            "exists",
            json!({"field": "payload.repository.owner.login", "operator": "exists"}),
        ),
        (
            "timediff_lt",
            json!({"field": "payload.pushed_at", "operator": "timediff_lt", "value": 300}),
        ),
        (
            "any_item_20",
            json!({"field": "payload.commits", "operator": "any_item",
                   "condition": {"field": "item.status", "operator": "equals", "value": "failed"}}),
        ),
    ];
    let mut group = c.benchmark_group("single");
    for (name, conditions) in cases {
        let compiled = compile(conditions);
        group.bench_function(name, |b| {
            b.iter(|| black_box(&compiled).matches_at(black_box(&ctx), at))
        });
    }
    group.finish();
}

fn nested_rule() -> Value {
    json!({"all": [
        {"field": "trigger.ref", "operator": "equals", "value": "github.push"},
        {"field": "payload.repository.name", "operator": "equals", "value": "attune"},
        {"any": [
            {"field": "payload.branch", "operator": "equals", "value": "main"},
            {"field": "payload.branch", "operator": "starts_with", "value": "release-"},
        ]},
        {"not": {"field": "payload.labels", "operator": "contains", "value": "wip"}},
        {"field": "payload.size", "operator": "less_or_equal", "value": 100},
        {"field": "payload.repository.owner.login", "operator": "in",
         "value": ["attune-org", "someone"], "ignore_case": true},
        {"any": [
            {"field": "payload.ref", "operator": "matches", "value": "^refs/heads/"},
            {"field": "payload.ref", "operator": "wildcard", "value": "refs/tags/*"},
        ]},
        {"field": "payload.pushed_at", "operator": "timediff_lt", "value": 3600},
        {"field": "sensor.ref", "operator": "exists"},
    ]})
}

fn nested(c: &mut Criterion) {
    let ctx = context();
    let at = now();
    let compiled = compile(nested_rule());
    assert!(
        compiled.matches_at(&ctx, now()),
        "the nested rule is meant to match"
    );
    c.bench_function("nested_10_conditions", |b| {
        b.iter(|| black_box(&compiled).matches_at(black_box(&ctx), at))
    });
    c.bench_function("nested_10_conditions_explain", |b| {
        b.iter(|| black_box(&compiled).explain_at(black_box(&ctx), at))
    });
    c.bench_function("compile_nested_10_conditions", |b| {
        let rule = nested_rule();
        b.iter(|| CompiledConditions::compile(black_box(&rule)))
    });
}

/// 1,000 rules on one trigger, as the rule matcher holds them: a realistic mix where most
/// rules reject the event after one or two conditions and some match.
fn thousand_rules(c: &mut Criterion) {
    let ctx = context();
    let at = now();
    let rules: Vec<CompiledConditions> = (0..1000)
        .map(|i| {
            let conditions = match i % 4 {
                0 => json!({"all": [
                    {"field": "payload.branch", "operator": "equals", "value": format!("branch-{i}")},
                    {"field": "payload.size", "operator": "greater_than", "value": i},
                ]}),
                1 => json!({"any": [
                    {"field": "payload.labels", "operator": "contains", "value": format!("label-{i}")},
                    {"field": "payload.ref", "operator": "ends_with", "value": format!("/{i}")},
                ]}),
                2 => json!([
                    {"field": "payload.repository.name", "operator": "equals", "value": "attune"},
                    {"field": "payload.commits", "operator": "any_item",
                     "condition": {"field": "item.files", "operator": "equals", "value": i % 25}},
                ]),
                _ => nested_rule(),
            };
            compile(conditions)
        })
        .collect();
    let matched = rules.iter().filter(|r| r.matches_at(&ctx, now())).count();
    assert!(
        matched > 0 && matched < rules.len(),
        "a mix of matches: {matched}"
    );
    c.bench_function("trigger_1000_rules", |b| {
        b.iter(|| {
            black_box(&rules)
                .iter()
                .filter(|rule| rule.matches_at(black_box(&ctx), at))
                .count()
        })
    });
    c.bench_function("trigger_1000_rules_with_clock", |b| {
        b.iter(|| {
            black_box(&rules)
                .iter()
                .filter(|rule| rule.matches(black_box(&ctx)))
                .count()
        })
    });
}

criterion_group!(benches, single_operators, nested, thousand_rules);
criterion_main!(benches);
