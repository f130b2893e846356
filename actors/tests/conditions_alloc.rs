//! `matches` is the per-event fast path: once warm, it must not allocate (no trace, no path
//! splitting, no pattern compiling). A counting allocator checks that on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use attune_actors::conditions::CompiledConditions;
use serde_json::json;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; the thread-locals are const-initialized
// `Cell`s without destructors, so touching them never allocates or re-enters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn matches_does_not_allocate() {
    let ctx = json!({
        "payload": {"branch": "main", "ref": "refs/heads/main", "size": 3,
                    "labels": ["a", "B"], "at": "2024-06-01T11:59:00Z",
                    "commits": [{"status": "ok"}, {"status": "FAIL"}]},
        "trigger": {"ref": "t"}, "sensor": null, "event": {"id": 1, "created": "x"}
    });
    let rule = CompiledConditions::compile(&json!({"all": [
        {"field": "payload.branch", "operator": "equals", "value": "MAIN", "ignore_case": true},
        {"field": "payload.ref", "operator": "matches", "value": "^refs/heads/"},
        {"field": "payload.ref", "operator": "wildcard", "value": "refs/*"},
        {"field": "payload.labels", "operator": "contains", "value": "b", "ignore_case": true},
        {"field": "payload.size", "operator": "in", "value": [1, 2, 3.0]},
        {"not": {"field": "payload.missing", "operator": "exists"}},
        {"field": "payload.at", "operator": "timediff_gt", "value": 1},
        {"field": "payload.commits", "operator": "any_item",
         "condition": {"field": "item.status", "operator": "equals", "value": "fail",
                       "ignore_case": true}}
    ]}))
    .expect("valid");
    // Warm up: the regex engine builds its per-thread search cache on first use.
    assert!(rule.matches(&ctx));
    let mut matched = false;
    let count = allocations_during(|| matched = rule.matches(&ctx));
    assert!(matched);
    assert_eq!(count, 0, "matches allocated {count} time(s)");
    // The counter does count: explain builds a trace.
    let count = allocations_during(|| matched = rule.explain(&ctx).matched);
    assert!(matched);
    assert!(count > 0, "the allocation counter saw nothing");
}
