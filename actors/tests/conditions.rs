//! Table-driven tests of the condition engine: every operator with its edge cases, the
//! validation errors with their pointers, and the explain output.

use attune_actors::conditions::{CompiledConditions, ConditionError, MAX_DEPTH};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    "2024-06-01T12:00:00Z".parse().expect("valid timestamp")
}

fn context() -> Value {
    json!({
        "payload": {
            "branch": "main",
            "greek": "ΣΑΣ",
            "street": "Straße",
            "kelvin": "\u{212A}elvin",
            "dotted_i": "İ",
            "n": 5,
            "f": 2.5,
            "one": 1,
            "one_f": 1.0,
            "big": 9_007_199_254_740_993_i64,
            "s_num": "5",
            "nothing": null,
            "yes": true,
            "list": [1, "a", {"k": "v"}],
            "empty": [],
            "obj": {"Key": 1, "a.b": 2},
            "multiline": "a\nb",
            "star": "a*",
            "ts_recent": "2024-06-01T11:59:50Z",
            "ts_offset": "2024-06-01T12:00:00+02:00",
            "ts_future": "2024-06-01T12:01:00Z",
            "ts_old": "2020-01-01T00:00:00Z",
            "ts_bad": "yesterday",
            "commits": [
                {"id": "a1", "status": "ok", "files": 3, "tags": ["x"]},
                {"id": "b2", "status": "FAIL", "files": 0, "tags": []}
            ]
        },
        "trigger": {"ref": "core.webhook"},
        "sensor": null,
        "event": {"id": 42, "created": "2024-06-01T11:59:59Z"}
    })
}

fn cond(field: &str, operator: &str, value: Value) -> Value {
    json!({"field": field, "operator": operator, "value": value})
}

fn cond_ci(field: &str, operator: &str, value: Value) -> Value {
    json!({"field": field, "operator": operator, "value": value, "ignore_case": true})
}

fn bare(field: &str, operator: &str) -> Value {
    json!({"field": field, "operator": operator})
}

fn item(field: &str, operator: &str, condition: Value) -> Value {
    json!({"field": field, "operator": operator, "condition": condition})
}

/// Checks each row with `matches_at`, `explain_at` and under `not` (which must flip it).
fn run(rows: &[(Value, bool)]) {
    let ctx = context();
    let mut failures = Vec::new();
    for (conditions, expected) in rows {
        let compiled = CompiledConditions::compile(conditions)
            .unwrap_or_else(|e| panic!("{conditions} should compile: {e}"));
        let got = compiled.matches_at(&ctx, now());
        if got != *expected {
            failures.push(format!("{conditions}: expected {expected}, got {got}"));
        }
        let explained = compiled.explain_at(&ctx, now());
        assert_eq!(explained.matched, got, "explain disagrees on {conditions}");
        // `not` takes a condition or a group; a top-level list means `all`.
        let inner = match conditions {
            Value::Array(items) => json!({ "all": items }),
            other => other.clone(),
        };
        let negated = CompiledConditions::compile(&json!({ "not": inner }))
            .expect("a negated valid condition is valid");
        assert_eq!(negated.matches_at(&ctx, now()), !got, "not({conditions})");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn equals() {
    run(&[
        (cond("payload.branch", "equals", json!("main")), true),
        (cond("payload.branch", "equals", json!("Main")), false),
        (cond_ci("payload.branch", "equals", json!("MAIN")), true),
        (cond("payload.one", "equals", json!(1.0)), true),
        (cond("payload.one_f", "equals", json!(1)), true),
        (
            cond("payload.big", "equals", json!(9_007_199_254_740_992.0)),
            false,
        ),
        (cond("payload.s_num", "equals", json!(5)), false),
        (cond("payload.n", "equals", json!("5")), false),
        (cond("payload.nothing", "equals", json!(null)), true),
        (cond("payload.nothing", "equals", json!(false)), false),
        (cond("payload.missing", "equals", json!(null)), false),
        (cond("payload.yes", "equals", json!(true)), true),
        (
            cond("payload.list", "equals", json!([1.0, "a", {"k": "v"}])),
            true,
        ),
        (cond("payload.empty", "equals", json!([])), true),
        (
            cond("payload.obj", "equals", json!({"a.b": 2.0, "Key": 1})),
            true,
        ),
        (cond("trigger.ref", "equals", json!("core.webhook")), true),
        (cond("event.id", "equals", json!(42)), true),
        (cond("sensor", "equals", json!(null)), true),
        // Unicode simple case folding: final sigma, Kelvin sign; no 'ß' -> 'ss', no 'İ' -> 'i'.
        (cond_ci("payload.greek", "equals", json!("σας")), true),
        (cond("payload.greek", "equals", json!("σας")), false),
        (cond_ci("payload.kelvin", "equals", json!("KELVIN")), true),
        (cond_ci("payload.street", "equals", json!("STRASSE")), false),
        (cond_ci("payload.street", "equals", json!("STRAẞE")), true),
        (cond_ci("payload.dotted_i", "equals", json!("i")), false),
        (cond_ci("payload.n", "equals", json!("5")), false),
    ]);
}

#[test]
fn not_equals() {
    run(&[
        (cond("payload.branch", "not_equals", json!("dev")), true),
        (cond("payload.branch", "not_equals", json!("main")), false),
        (
            cond_ci("payload.branch", "not_equals", json!("MAIN")),
            false,
        ),
        (cond("payload.missing", "not_equals", json!(1)), false),
        (cond("payload.s_num", "not_equals", json!(5)), true),
        (cond("payload.one", "not_equals", json!(1.0)), false),
        (cond("payload.nothing", "not_equals", json!(null)), false),
        (cond("payload.nothing", "not_equals", json!(0)), true),
        (cond("sensor.ref", "not_equals", json!("x")), false),
    ]);
}

#[test]
fn contains_and_not_contains() {
    run(&[
        (cond("payload.branch", "contains", json!("ai")), true),
        (cond("payload.branch", "contains", json!("AI")), false),
        (cond_ci("payload.branch", "contains", json!("AI")), true),
        (cond("payload.branch", "contains", json!("")), true),
        (cond("payload.branch", "contains", json!(5)), false),
        (cond("payload.list", "contains", json!(1.0)), true),
        (cond("payload.list", "contains", json!("b")), false),
        (cond("payload.list", "contains", json!("A")), false),
        (cond_ci("payload.list", "contains", json!("A")), true),
        (cond("payload.list", "contains", json!({"k": "v"})), true),
        (cond("payload.empty", "contains", json!(1)), false),
        (cond("payload.obj", "contains", json!("Key")), true),
        (cond("payload.obj", "contains", json!("key")), false),
        (cond_ci("payload.obj", "contains", json!("key")), true),
        (cond("payload.obj", "contains", json!(1)), false),
        (cond("payload.n", "contains", json!(5)), false),
        (cond("payload.missing", "contains", json!("a")), false),
        (cond_ci("payload.greek", "contains", json!("ας")), true),
        (cond("payload.branch", "not_contains", json!("x")), true),
        (cond("payload.branch", "not_contains", json!("ai")), false),
        (
            cond_ci("payload.branch", "not_contains", json!("AI")),
            false,
        ),
        (cond("payload.missing", "not_contains", json!("x")), false),
        (cond("payload.n", "not_contains", json!(5)), false),
        (cond("payload.branch", "not_contains", json!(5)), false),
        (cond("payload.empty", "not_contains", json!(1)), true),
        (cond("payload.obj", "not_contains", json!("nope")), true),
        (cond("payload.obj", "not_contains", json!(1)), false),
    ]);
}

#[test]
fn starts_with_and_ends_with() {
    run(&[
        (cond("payload.branch", "starts_with", json!("ma")), true),
        (cond("payload.branch", "starts_with", json!("MA")), false),
        (cond_ci("payload.branch", "starts_with", json!("MA")), true),
        (cond("payload.branch", "starts_with", json!("")), true),
        (cond("payload.branch", "starts_with", json!("main!")), false),
        (cond("payload.n", "starts_with", json!("5")), false),
        (cond("payload.missing", "starts_with", json!("")), false),
        (cond_ci("payload.greek", "starts_with", json!("σα")), true),
        (cond("payload.branch", "ends_with", json!("in")), true),
        (cond("payload.branch", "ends_with", json!("ma")), false),
        (cond_ci("payload.branch", "ends_with", json!("IN")), true),
        (cond("payload.s_num", "ends_with", json!("5")), true),
        (cond("payload.n", "ends_with", json!("5")), false),
        (cond("payload.nothing", "ends_with", json!("")), false),
    ]);
}

#[test]
fn ordering() {
    run(&[
        (cond("payload.n", "greater_than", json!(4)), true),
        (cond("payload.n", "greater_than", json!(5)), false),
        (cond("payload.n", "greater_than", json!(4.9)), true),
        (cond("payload.f", "greater_than", json!(2)), true),
        (
            cond(
                "payload.big",
                "greater_than",
                json!(9_007_199_254_740_992.0),
            ),
            true,
        ),
        (cond("payload.n", "greater_than", json!("4")), false),
        (cond("payload.s_num", "greater_than", json!("4")), true),
        (cond("payload.s_num", "greater_than", json!(4)), false),
        (cond("payload.branch", "greater_than", json!("apple")), true),
        (cond("payload.missing", "greater_than", json!(0)), false),
        (cond("payload.nothing", "greater_than", json!(0)), false),
        (cond("payload.list", "greater_than", json!(0)), false),
        (cond("payload.n", "less_than", json!(5.5)), true),
        (cond("payload.n", "less_than", json!(5)), false),
        (cond("payload.f", "less_than", json!(3)), true),
        (cond("payload.branch", "less_than", json!("z")), true),
        // Code point order: every upper-case ASCII letter sorts before every lower-case one.
        (cond("payload.branch", "less_than", json!("Main")), false),
        (cond("payload.missing", "less_than", json!(0)), false),
        (cond("payload.n", "greater_or_equal", json!(5)), true),
        (cond("payload.n", "greater_or_equal", json!(5.0)), true),
        (cond("payload.n", "greater_or_equal", json!(6)), false),
        (
            cond("payload.branch", "greater_or_equal", json!("main")),
            true,
        ),
        (cond("payload.yes", "greater_or_equal", json!(1)), false),
        (cond("payload.n", "less_or_equal", json!(5)), true),
        (cond("payload.n", "less_or_equal", json!(4.99)), false),
        (cond("payload.branch", "less_or_equal", json!("maio")), true),
        (cond("payload.missing", "less_or_equal", json!("z")), false),
    ]);
}

#[test]
fn in_and_not_in() {
    run(&[
        (cond("payload.branch", "in", json!(["main", "dev"])), true),
        (cond("payload.branch", "in", json!(["MAIN"])), false),
        (
            cond_ci("payload.branch", "in", json!(["dev", "MAIN"])),
            true,
        ),
        (cond_ci("payload.one", "in", json!([1, "x"])), true),
        (cond_ci("payload.branch", "in", json!([1, 2])), false),
        (cond("payload.one", "in", json!([1.0])), true),
        (cond("payload.s_num", "in", json!([5])), false),
        (cond("payload.nothing", "in", json!([null])), true),
        (cond("payload.missing", "in", json!([null])), false),
        (
            cond("payload.list", "in", json!([[1, "a", {"k": "v"}]])),
            true,
        ),
        (cond("payload.branch", "in", json!([])), false),
        (cond("payload.branch", "not_in", json!(["dev"])), true),
        (cond("payload.branch", "not_in", json!(["main"])), false),
        (cond_ci("payload.branch", "not_in", json!(["MAIN"])), false),
        (cond("payload.missing", "not_in", json!(["x"])), false),
        (cond("payload.n", "not_in", json!([])), true),
        (cond("payload.s_num", "not_in", json!([5])), true),
    ]);
}

#[test]
fn matches_and_wildcard() {
    run(&[
        (cond("payload.branch", "matches", json!("^ma")), true),
        (cond("payload.branch", "matches", json!("ai")), true),
        (cond("payload.branch", "matches", json!("^ai")), false),
        (cond("payload.branch", "matches", json!("^MA")), false),
        (cond_ci("payload.branch", "matches", json!("^MA")), true),
        (cond("payload.greek", "matches", json!("(?i)^σας$")), true),
        (cond("payload.n", "matches", json!("5")), false),
        (cond("payload.missing", "matches", json!("")), false),
        (cond("payload.branch", "wildcard", json!("m*")), true),
        (cond("payload.branch", "wildcard", json!("ma")), false),
        (cond("payload.branch", "wildcard", json!("m?in")), true),
        (cond("payload.branch", "wildcard", json!("m??n*")), true),
        (cond("payload.branch", "wildcard", json!("*")), true),
        (cond("payload.branch", "wildcard", json!("M*")), false),
        (cond_ci("payload.branch", "wildcard", json!("M*")), true),
        (cond("payload.multiline", "wildcard", json!("a*b")), true),
        (cond("payload.multiline", "wildcard", json!("a?b")), true),
        (cond("payload.star", "wildcard", json!("a\\*")), true),
        (cond("payload.branch", "wildcard", json!("m\\*")), false),
        (cond("payload.branch", "wildcard", json!("m.*")), false),
        (cond("payload.n", "wildcard", json!("*")), false),
        (cond("payload.missing", "wildcard", json!("*")), false),
    ]);
}

#[test]
fn exists_and_not_exists() {
    run(&[
        (bare("payload.branch", "exists"), true),
        (bare("payload.nothing", "exists"), true),
        (bare("payload.missing", "exists"), false),
        (bare("sensor", "exists"), true),
        (bare("sensor.ref", "exists"), false),
        (bare("payload.list.0", "exists"), true),
        (bare("payload.list[2].k", "exists"), true),
        (bare("payload.list.9", "exists"), false),
        (bare("payload.obj[\"a.b\"]", "exists"), true),
        (bare("payload.obj.a.b", "exists"), false),
        (bare("payload.missing", "not_exists"), true),
        (bare("payload.nothing", "not_exists"), false),
        (bare("payload.branch", "not_exists"), false),
        (bare("sensor.ref", "not_exists"), true),
        (bare("payload.n.x", "not_exists"), true),
    ]);
}

#[test]
fn timediff() {
    run(&[
        (cond("payload.ts_recent", "timediff_lt", json!(60)), true),
        (cond("payload.ts_recent", "timediff_lt", json!(10)), false),
        (cond("payload.ts_recent", "timediff_lt", json!(10.5)), true),
        (cond("payload.ts_offset", "timediff_lt", json!(3600)), false),
        (cond("payload.ts_offset", "timediff_gt", json!(7199)), true),
        (cond("payload.ts_future", "timediff_lt", json!(0)), true),
        (cond("payload.ts_future", "timediff_gt", json!(0)), false),
        (cond("payload.ts_old", "timediff_gt", json!(86_400)), true),
        (cond("payload.ts_recent", "timediff_gt", json!(60)), false),
        (cond("event.created", "timediff_lt", json!(2)), true),
        (cond("payload.ts_bad", "timediff_lt", json!(1e12)), false),
        (cond("payload.ts_bad", "timediff_gt", json!(0)), false),
        (cond("payload.n", "timediff_lt", json!(1e12)), false),
        (cond("payload.missing", "timediff_gt", json!(0)), false),
    ]);
}

#[test]
fn timediff_uses_the_clock_without_now() {
    let recent = (Utc::now() - chrono::TimeDelta::seconds(5)).to_rfc3339();
    let ctx = json!({"payload": {"at": recent}});
    let lt = CompiledConditions::compile(&cond("payload.at", "timediff_lt", json!(3600)))
        .expect("valid");
    let gt = CompiledConditions::compile(&cond("payload.at", "timediff_gt", json!(3600)))
        .expect("valid");
    assert!(lt.matches(&ctx));
    assert!(!gt.matches(&ctx));
    assert!(lt.explain(&ctx).matched);
}

#[test]
fn item_operators() {
    let ok = cond("item.status", "equals", json!("ok"));
    let fail = cond("item.status", "equals", json!("fail"));
    run(&[
        (item("payload.commits", "any_item", ok.clone()), true),
        (item("payload.commits", "any_item", fail.clone()), false),
        (
            item(
                "payload.commits",
                "any_item",
                cond_ci("item.status", "equals", json!("fail")),
            ),
            true,
        ),
        (item("payload.commits", "all_item", ok.clone()), false),
        (
            item("payload.commits", "all_item", bare("item.id", "exists")),
            true,
        ),
        (
            item(
                "payload.commits",
                "all_item",
                cond("item.files", "greater_than", json!(0)),
            ),
            false,
        ),
        (item("payload.empty", "any_item", ok.clone()), false),
        // Vacuous truth: every element of an empty array satisfies anything.
        (item("payload.empty", "all_item", fail.clone()), true),
        (item("payload.branch", "any_item", ok.clone()), false),
        (item("payload.branch", "all_item", ok.clone()), false),
        (item("payload.missing", "all_item", ok.clone()), false),
        (
            item(
                "payload.list",
                "any_item",
                cond("item", "equals", json!("a")),
            ),
            true,
        ),
        (
            item("payload.list", "all_item", bare("item", "exists")),
            true,
        ),
        // Nested items, and paths outside `item` still read the event context.
        (
            item(
                "payload.commits",
                "any_item",
                item("item.tags", "any_item", cond("item", "equals", json!("x"))),
            ),
            true,
        ),
        (
            item(
                "payload.commits",
                "any_item",
                json!({"all": [
                    cond("item.files", "equals", json!(0)),
                    cond("payload.branch", "equals", json!("main")),
                ]}),
            ),
            true,
        ),
    ]);
}

#[test]
fn groups_lists_and_empty_conditions() {
    let t = cond("payload.branch", "equals", json!("main"));
    let f = cond("payload.branch", "equals", json!("dev"));
    run(&[
        (json!({"all": [t, t]}), true),
        (json!({"all": [t, f]}), false),
        (json!({"any": [f, t]}), true),
        (json!({"any": [f, f]}), false),
        (json!({"not": f}), true),
        (json!({"not": {"not": t}}), true),
        (json!([t, t]), true),
        (json!([t, f]), false),
        (json!({"all": [t, {"any": [f, {"not": f}]}]}), true),
        // Nested empty groups keep their logical meaning.
        (json!({"all": [t, {"all": []}]}), true),
        (json!({"all": [t, {"any": []}]}), false),
    ]);
    let ctx = context();
    for empty in [
        json!(null),
        json!([]),
        json!({}),
        json!({"all": []}),
        json!({"any": []}),
    ] {
        let compiled = CompiledConditions::compile(&empty).expect("empty is valid");
        assert!(compiled.is_empty(), "{empty}");
        assert!(compiled.matches(&ctx), "{empty} matches every event");
        assert!(compiled.matches(&json!({})), "{empty} matches every event");
        assert!(compiled.explain(&ctx).matched);
    }
}

#[test]
fn top_level_combinator() {
    let t = cond("payload.branch", "equals", json!("main"));
    let top = |v: Value| CompiledConditions::compile(&v).expect("valid").top_level();
    assert_eq!(top(json!({"any": [t.clone()]})), "any");
    assert_eq!(top(json!({"any": []})), "any");
    assert_eq!(top(json!({"all": [t.clone()]})), "all");
    assert_eq!(top(json!([t.clone()])), "all");
    assert_eq!(top(t.clone()), "all");
    assert_eq!(top(json!({"not": t})), "all");
    assert_eq!(top(json!(null)), "all");
}

fn refused(conditions: Value) -> ConditionError {
    match CompiledConditions::compile(&conditions) {
        Ok(_) => panic!("{conditions} should be refused"),
        Err(e) => e,
    }
}

#[test]
fn validation_errors_carry_the_pointer_of_the_bad_node() {
    let ok = cond("payload.x", "equals", json!(1));
    let rows: Vec<(Value, &str, &str)> = vec![
        (
            json!({"all": [ok.clone(), cond("payload.x", "bogus", json!(1))]}),
            "/all/1/operator",
            "unknown operator 'bogus'",
        ),
        (
            json!({"field": "payload.x", "operator": 7}),
            "/operator",
            "must be a string",
        ),
        (
            json!({"field": "payload.x", "value": 1}),
            "/",
            "missing 'operator'",
        ),
        (
            json!({"operator": "equals", "value": 1}),
            "/",
            "missing 'field'",
        ),
        (
            json!({"field": 3, "operator": "equals", "value": 1}),
            "/field",
            "must be a string",
        ),
        (bare("payload.x", "equals"), "/", "missing 'value'"),
        (
            json!([ok.clone(), {"field": "payload.x", "operator": "equals", "value": 1, "extra": 1}]),
            "/1/extra",
            "unknown key 'extra'",
        ),
        (
            json!({"all": [{"field": "payload.x", "operator": "exists", "a/b~": 1}]}),
            "/all/0/a~1b~0",
            "unknown key",
        ),
        (
            cond("payload.x", "exists", json!(1)),
            "/value",
            "takes no 'value'",
        ),
        (
            cond("payload.x", "in", json!("main")),
            "/value",
            "needs an array",
        ),
        (
            cond("payload.x", "not_in", json!({})),
            "/value",
            "needs an array",
        ),
        (
            cond("payload.x", "matches", json!("(")),
            "/value",
            "invalid pattern",
        ),
        (
            cond("payload.x", "matches", json!(1)),
            "/value",
            "needs a regex string",
        ),
        (
            cond("payload.x", "matches", json!("\\w{1000}{1000}")),
            "/value",
            "too large",
        ),
        (
            cond("payload.x", "wildcard", json!("a\\")),
            "/value",
            "lone '\\'",
        ),
        (
            cond("payload.x", "wildcard", json!(["*"])),
            "/value",
            "needs a glob string",
        ),
        (
            cond("payload.x", "timediff_lt", json!("10")),
            "/value",
            "number of seconds",
        ),
        (
            cond("payload.x", "timediff_gt", json!(-1)),
            "/value",
            "negative",
        ),
        (
            cond("payload.x", "starts_with", json!(1)),
            "/value",
            "needs a string",
        ),
        (
            cond("payload.x", "greater_than", json!([1])),
            "/value",
            "a number or a string",
        ),
        (
            cond("payload.x", "less_or_equal", json!(null)),
            "/value",
            "a number or a string",
        ),
        (
            cond_ci("payload.x", "equals", json!(1)),
            "/value",
            "a string value with ignore_case",
        ),
        (
            cond_ci("payload.x", "greater_than", json!(1)),
            "/ignore_case",
            "does not apply",
        ),
        (
            json!({"field": "payload.x", "operator": "equals", "value": "a", "ignore_case": "yes"}),
            "/ignore_case",
            "true or false",
        ),
        (
            cond("payload..x", "equals", json!(1)),
            "/field",
            "empty segment",
        ),
        (cond("", "equals", json!(1)), "/field", "the path is empty"),
        (
            cond("payload[\"a.b", "equals", json!(1)),
            "/field",
            "unterminated",
        ),
        (
            cond("paylaod.x", "equals", json!(1)),
            "/field",
            "unknown root 'paylaod'",
        ),
        (
            cond("item.x", "equals", json!(1)),
            "/field",
            "unknown root 'item'",
        ),
        (
            json!({"field": "payload.l", "operator": "any_item"}),
            "/",
            "missing 'condition'",
        ),
        (
            json!({"field": "payload.l", "operator": "any_item", "value": 1, "condition": ok}),
            "/value",
            "takes no 'value'",
        ),
        (
            item("payload.l", "all_item", cond("item.x", "nope", json!(1))),
            "/condition/operator",
            "unknown operator",
        ),
        (
            json!({"field": "payload.x", "operator": "equals", "value": 1, "condition": {}}),
            "/condition",
            "only any_item and all_item",
        ),
        (json!({"all": [], "x": 1}), "/x", "takes no other key"),
        (
            json!({"any": {"field": "payload.x"}}),
            "/any",
            "array of conditions",
        ),
        (json!({"all": [1]}), "/all/0", "found a number"),
        (json!({"all": [{}]}), "/all/0", "empty object"),
        (json!({"not": [ok]}), "/not", "found an array"),
        (json!("payload.x == 1"), "/", "found a string"),
        (json!(true), "/", "found a boolean"),
    ];
    let mut failures = Vec::new();
    for (conditions, pointer, message) in rows {
        let err = refused(conditions.clone());
        if err.pointer != pointer || !err.message.contains(message) {
            failures.push(format!(
                "{conditions}\n  expected {pointer:?} containing {message:?}\n  got {err:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn nested_nots(levels: usize) -> Value {
    (0..levels).fold(
        bare("payload.x", "exists"),
        |inner, _| json!({"not": inner}),
    )
}

#[test]
fn depth_limit() {
    // The top-level node is depth 1, so MAX_DEPTH - 1 `not`s around a condition fit.
    assert!(CompiledConditions::compile(&nested_nots(MAX_DEPTH - 1)).is_ok());
    let err = refused(nested_nots(MAX_DEPTH));
    assert_eq!(err.pointer, "/not".repeat(MAX_DEPTH));
    assert!(err.message.contains("deeper than 32"), "{err}");
    // Far deeper input is refused the same way, without exhausting the stack.
    assert_eq!(refused(nested_nots(100)).pointer, "/not".repeat(MAX_DEPTH));
    // Item conditions count toward the depth too.
    let deep_item = (0..MAX_DEPTH).fold(bare("item", "exists"), |inner, _| {
        item("payload.l", "any_item", inner)
    });
    let err = refused(deep_item);
    assert_eq!(err.pointer, "/condition".repeat(MAX_DEPTH));
}

#[test]
fn error_display_names_the_pointer() {
    let err = refused(json!({"all": [cond("payload.x", "bogus", json!(1))]}));
    assert!(
        err.to_string()
            .starts_with("invalid condition at '/all/0/operator': unknown operator 'bogus'"),
        "{err}"
    );
}

#[test]
fn explain_renders_a_readable_tree() {
    let conditions = json!({"all": [
        cond("payload.branch", "equals", json!("main")),
        cond("payload.branch", "equals", json!("dev")),
        {"any": [
            bare("payload.gone", "exists"),
            cond("payload.s_num", "greater_than", json!(3)),
            {"not": cond_ci("payload.branch", "starts_with", json!("DE"))}
        ]},
        item("payload.commits", "any_item", cond("item.status", "equals", json!("ok"))),
        cond("payload.ts_recent", "timediff_lt", json!(60))
    ]});
    let compiled = CompiledConditions::compile(&conditions).expect("valid");
    let explanation = compiled.explain_at(&context(), now());
    assert!(!explanation.matched);
    let expected = r#"✘ all
  ✔ payload.branch equals "main" (actual: "main")
  ✘ payload.branch equals "dev" (actual: "main")
  ✔ any
    ✘ payload.gone exists (missing)
    ✘ payload.s_num greater_than 3 (actual: "5"; type mismatch: ordering needs two numbers or two strings)
    ✔ not
      ✘ payload.branch starts_with (ignore case) "DE" (actual: "main")
  ✔ payload.commits any_item (2 item(s))
    ✔ [0] item.status equals "ok" (actual: "ok")
    ✘ [1] item.status equals "ok" (actual: "FAIL")
  ✔ payload.ts_recent timediff_lt 60 (actual: "2024-06-01T11:59:50Z"; 10.000 s old)
"#;
    assert_eq!(explanation.render_tree(), expected);
}

#[test]
fn explain_serializes_for_json_output() {
    let conditions = json!([
        cond("payload.gone", "not_equals", json!(1)),
        cond("payload.nothing", "equals", json!(null)),
        item("payload.empty", "all_item", bare("item", "exists")),
    ]);
    let compiled = CompiledConditions::compile(&conditions).expect("valid");
    let json = serde_json::to_value(compiled.explain_at(&context(), now())).expect("serializes");
    assert_eq!(
        json,
        json!({
            "matched": false,
            "root": {
                "kind": "all",
                "pointer": "/",
                "result": false,
                "children": [
                    {"kind": "condition", "pointer": "/0", "field": "payload.gone",
                     "operator": "not_equals", "expected": 1, "missing": true, "result": false},
                    {"kind": "condition", "pointer": "/1", "field": "payload.nothing",
                     "operator": "equals", "expected": null, "actual": null, "result": true},
                    {"kind": "condition", "pointer": "/2", "field": "payload.empty",
                     "operator": "all_item", "actual": [], "result": true}
                ]
            }
        })
    );
}

#[test]
fn explain_without_conditions() {
    let compiled = CompiledConditions::compile(&json!(null)).expect("valid");
    let explanation = compiled.explain(&context());
    assert!(explanation.matched);
    assert!(explanation.root.is_none());
    assert_eq!(
        explanation.render_tree(),
        "✔ no conditions: every event matches\n"
    );
}

#[test]
fn evaluation_context_has_the_documented_shape() {
    let event = attune_actors::domain::Event {
        id: 7,
        trigger: Some(1),
        trigger_ref: "core.webhook".into(),
        config: json!({}),
        payload: json!({"branch": "main"}),
        source: None,
        source_ref: None,
        created: now(),
        message_id: None,
        traceparent: None,
    };
    let ctx = attune_actors::conditions::evaluation_context(&event);
    let rule = CompiledConditions::compile(&json!([
        cond("payload.branch", "equals", json!("main")),
        cond("trigger.ref", "equals", json!("core.webhook")),
        cond("sensor", "equals", json!(null)),
        cond("event.id", "equals", json!(7)),
        cond("event.created", "timediff_lt", json!(1)),
    ]))
    .expect("valid");
    assert!(rule.matches_at(&ctx, now()));
}
