//! Property tests of the condition engine's logic: `not`, De Morgan between `all` and
//! `any`, `explain` agreeing with `matches`, and compile never panicking on arbitrary JSON.

use attune_actors::conditions::{CompiledConditions, ExplainNode};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn now() -> DateTime<Utc> {
    "2024-06-01T12:00:00Z".parse().expect("valid timestamp")
}

/// Small JSON values, so equalities and orderings between them happen often.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        (-3i64..3).prop_map(|i| json!(i as f64)),
        prop_oneof![Just("a"), Just("A"), Just("ab"), Just("b"), Just("")].prop_map(|s| json!(s)),
        Just(json!("2024-06-01T11:59:00Z")),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((prop_oneof![Just("a"), Just("b"), Just("A")], inner), 0..3)
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
        ]
    })
}

/// An event context whose payload fields `a`, `b`, `c` may or may not be present.
fn context() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (prop_oneof![Just("a"), Just("b"), Just("c")], value()),
        0..4,
    )
    .prop_map(|kv| {
        let payload: Map<String, Value> = kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        json!({"payload": payload, "trigger": {"ref": "t"}, "sensor": null,
                   "event": {"id": 1, "created": "2024-06-01T12:00:00Z"}})
    })
}

const FIELDS: [&str; 5] = [
    "payload.a",
    "payload.b",
    "payload.c.a",
    "payload.c.0",
    "payload.missing",
];

/// A valid leaf condition, any operator.
fn leaf() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(FIELDS.to_vec());
    let with_value = (
        field.clone(),
        prop::sample::select(vec![
            "equals",
            "not_equals",
            "contains",
            "not_contains",
            "in",
            "not_in",
        ]),
        value(),
        any::<bool>(),
    )
        .prop_map(|(field, op, value, ci)| {
            let value = if op.ends_with("in") {
                json!([value])
            } else {
                value
            };
            let mut c = json!({"field": field, "operator": op, "value": value});
            // ignore_case only applies to string values (or arrays, for in / not_in).
            if ci && (c["value"].is_string() || op.ends_with("in")) {
                c["ignore_case"] = json!(true);
            }
            c
        });
    let string_ops = (
        field.clone(),
        prop::sample::select(vec!["starts_with", "ends_with", "matches", "wildcard"]),
        prop::sample::select(vec!["a", "A", "", "a*", "^a"]),
        any::<bool>(),
    )
        .prop_map(|(field, op, text, ci)| {
            json!({"field": field, "operator": op, "value": text, "ignore_case": ci})
        });
    let ordering = (
        field.clone(),
        prop::sample::select(vec![
            "greater_than",
            "less_than",
            "greater_or_equal",
            "less_or_equal",
        ]),
        prop_oneof![
            (-3i64..3).prop_map(Value::from),
            Just(json!("ab")),
            Just(json!(0.5))
        ],
    )
        .prop_map(|(field, op, value)| json!({"field": field, "operator": op, "value": value}));
    let presence = (
        field.clone(),
        prop::sample::select(vec!["exists", "not_exists"]),
    )
        .prop_map(|(field, op)| json!({"field": field, "operator": op}));
    let time = (
        field.clone(),
        prop::sample::select(vec!["timediff_lt", "timediff_gt"]),
        0u32..120,
    )
        .prop_map(|(field, op, s)| json!({"field": field, "operator": op, "value": s}));
    let items = (
        field,
        prop::sample::select(vec!["any_item", "all_item"]),
        value(),
    )
        .prop_map(|(field, op, v)| {
            json!({"field": field, "operator": op,
                   "condition": {"field": "item", "operator": "equals", "value": v}})
        });
    prop_oneof![with_value, string_ops, ordering, presence, time, items]
}

/// A tree of groups over valid leaves, well within the depth limit.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"all": v})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"any": v})),
            inner.prop_map(|c| json!({"not": c})),
        ]
    })
}

/// Evaluates `conditions` as a nested node. A top-level empty group means "no conditions"
/// (matches everything), so the logic is checked one level down, where `{"any": []}` is
/// false as it should be.
fn eval(conditions: &Value, ctx: &Value) -> bool {
    let nested = match conditions {
        Value::Array(_) => conditions.clone(),
        node => json!({ "all": [node] }),
    };
    CompiledConditions::compile(&nested)
        .unwrap_or_else(|e| panic!("{conditions} should compile: {e}"))
        .matches_at(ctx, now())
}

fn negate(c: &Value) -> Value {
    json!({"not": c})
}

fn check_node(node: &ExplainNode) {
    match node {
        ExplainNode::All {
            result, children, ..
        } => {
            assert_eq!(*result, children.iter().all(ExplainNode::result));
            children.iter().for_each(check_node);
        }
        ExplainNode::Any {
            result, children, ..
        } => {
            assert_eq!(*result, children.iter().any(ExplainNode::result));
            children.iter().for_each(check_node);
        }
        ExplainNode::Not { result, child, .. } => {
            assert_eq!(*result, !child.result());
            check_node(child);
        }
        ExplainNode::Condition(trace) => {
            assert_eq!(trace.missing, trace.actual.is_none());
            if trace.missing {
                assert_eq!(trace.result, trace.operator == "not_exists");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn not_negates(c in tree(), ctx in context()) {
        prop_assert_eq!(eval(&negate(&c), &ctx), !eval(&c, &ctx));
        prop_assert_eq!(eval(&negate(&negate(&c)), &ctx), eval(&c, &ctx));
    }

    #[test]
    fn de_morgan(cs in prop::collection::vec(tree(), 0..4), ctx in context()) {
        let negated: Vec<Value> = cs.iter().map(negate).collect();
        let all = json!({"all": cs});
        let any = json!({"any": cs});
        prop_assert_eq!(
            eval(&all, &ctx),
            eval(&negate(&json!({"any": negated})), &ctx)
        );
        prop_assert_eq!(
            eval(&any, &ctx),
            eval(&negate(&json!({"all": negated})), &ctx)
        );
        prop_assert_eq!(eval(&all, &ctx), cs.iter().all(|c| eval(c, &ctx)));
        prop_assert_eq!(eval(&any, &ctx), cs.iter().any(|c| eval(c, &ctx)));
        if !cs.is_empty() {
            prop_assert_eq!(eval(&Value::Array(cs.clone()), &ctx), cs.iter().all(|c| eval(c, &ctx)));
        }
    }

    #[test]
    fn explain_agrees_with_matches(c in tree(), ctx in context()) {
        let compiled = CompiledConditions::compile(&c).expect("valid");
        let explanation = compiled.explain_at(&ctx, now());
        prop_assert_eq!(explanation.matched, compiled.matches_at(&ctx, now()));
        if let Some(root) = &explanation.root {
            check_node(root);
            prop_assert_eq!(root.result(), explanation.matched);
        }
        let rendered = explanation.render_tree();
        let mark = if explanation.matched { '✔' } else { '✘' };
        prop_assert!(rendered.starts_with(mark), "{}", rendered);
        prop_assert!(serde_json::to_string(&explanation).is_ok());
    }

    #[test]
    fn missing_fields_fail_every_operator_but_not_exists(c in leaf(), ctx in context()) {
        let mut c = c;
        c["field"] = json!("payload.absent");
        let expected = c["operator"] == "not_exists";
        prop_assert_eq!(eval(&c, &ctx), expected);
    }

    #[test]
    fn equality_is_symmetric_and_in_agrees(a in value(), b in value()) {
        let ctx_a = json!({"payload": {"x": a.clone()}});
        let ctx_b = json!({"payload": {"x": b.clone()}});
        let eq = |v: &Value, ctx: &Value| eval(&json!({"field": "payload.x", "operator": "equals", "value": v}), ctx);
        prop_assert_eq!(eq(&b, &ctx_a), eq(&a, &ctx_b));
        prop_assert!(eq(&a, &ctx_a));
        let ne = eval(&json!({"field": "payload.x", "operator": "not_equals", "value": b}), &ctx_a);
        prop_assert_eq!(ne, !eq(&b, &ctx_a));
        let in_ = eval(&json!({"field": "payload.x", "operator": "in", "value": [b.clone()]}), &ctx_a);
        prop_assert_eq!(in_, eq(&b, &ctx_a));
    }

    #[test]
    fn any_item_is_not_all_item_not(items in prop::collection::vec(scalar(), 0..5), v in scalar()) {
        let ctx = json!({"payload": {"list": items}});
        let inner = json!({"field": "item", "operator": "equals", "value": v});
        let any = json!({"field": "payload.list", "operator": "any_item", "condition": inner});
        let all_not = json!({"field": "payload.list", "operator": "all_item",
                             "condition": {"not": inner}});
        prop_assert_eq!(eval(&any, &ctx), !eval(&all_not, &ctx));
    }

    #[test]
    fn compile_never_panics_on_arbitrary_json(conditions in arbitrary_conditions(), ctx in context()) {
        if let Ok(compiled) = CompiledConditions::compile(&conditions) {
            let matched = compiled.matches_at(&ctx, now());
            prop_assert_eq!(compiled.explain_at(&ctx, now()).matched, matched);
        }
    }
}

/// JSON built from the condition vocabulary, mostly invalid, to probe validation.
fn arbitrary_conditions() -> impl Strategy<Value = Value> {
    let atom = prop_oneof![
        scalar(),
        prop::sample::select(vec![
            "payload.a",
            "item",
            "item.a",
            "payload..a",
            "payload[\"a\"]",
            "equals",
            "in",
            "matches",
            "any_item",
            "wildcard",
            "(",
            "a\\",
        ])
        .prop_map(|s| json!(s)),
    ];
    atom.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "all",
                        "any",
                        "not",
                        "field",
                        "operator",
                        "value",
                        "condition",
                        "ignore_case",
                        "x",
                    ]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}
