//! The decisions of a pack write, apart from its I/O: what to do with each entity, and
//! the checks that refuse a pack (an entity defined twice, or owned by another pack).

use std::collections::HashSet;

use attune_actors::domain::Id;
use attune_actors::ports::StoreError;

/// What to do with one entity.
pub(super) enum Plan<T> {
    Insert(T),
    Update(T),
    Keep(Id),
}

/// Compares the desired value (carrying the stored id and timestamps) with the stored one.
pub(super) fn plan<T: PartialEq>(
    existing: Option<&T>,
    mut desired: T,
    id: impl Fn(&T) -> Id,
    bump: impl FnOnce(&mut T),
) -> Plan<T> {
    match existing {
        None => Plan::Insert(desired),
        Some(stored) if *stored == desired => Plan::Keep(id(stored)),
        Some(_) => {
            bump(&mut desired);
            Plan::Update(desired)
        }
    }
}

/// Refuses to take over an entity that another pack owns. Entities without a pack (made by
/// hand or by an older tool) are adopted.
pub(super) fn check_owner(
    kind: &str,
    entity_ref: &str,
    owner: Option<&str>,
    pack_ref: &str,
) -> Result<(), StoreError> {
    match owner {
        Some(owner) if owner != pack_ref => Err(StoreError::Invalid(format!(
            "{kind} `{entity_ref}` belongs to pack `{owner}`, not `{pack_ref}`"
        ))),
        _ => Ok(()),
    }
}

pub(super) fn check_unique<'a>(
    kind: &str,
    refs: impl Iterator<Item = &'a str>,
) -> Result<HashSet<&'a str>, StoreError> {
    let mut seen = HashSet::new();
    for entity_ref in refs {
        if !seen.insert(entity_ref) {
            return Err(StoreError::Invalid(format!(
                "{kind} `{entity_ref}` is defined twice in the pack"
            )));
        }
    }
    Ok(seen)
}
