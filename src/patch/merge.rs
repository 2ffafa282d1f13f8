//! RFC 7396 JSON Merge Patch, applied in place to a working copy.
//!
//! Members the patch does not name keep their value and position; `null` removes a member
//! without reordering the others; new members are appended in the patch's order.
//! Recursion follows the patch, whose depth the parser bounds.

use std::collections::HashMap;

use super::json::{Json, Object};

/// RFC 7396 §2 `MergePatch(Target, Patch)`; `src`: the source of an indexed target's raw
/// spans (empty for a parsed one), a raw object being expanded where the patch goes into it.
pub(super) fn merge(target: &mut Json, patch: &Json, src: &[u8]) {
    let Json::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    super::scan::expand(target, src);
    if !matches!(target, Json::Object(_)) {
        *target = Json::Object(Object::default());
    }
    if let Json::Object(obj) = target {
        merge_members(obj, members, src);
    }
}

fn merge_members(target: &mut Object, patch: &Object, src: &[u8]) {
    let positions = positions(target, patch);
    let mut removed = vec![false; target.len()];
    for ((name, value), position) in patch.iter().zip(positions) {
        match (value, position) {
            (Json::Null, Some(i)) => {
                if let Some(flag) = removed.get_mut(i) {
                    *flag = true;
                }
            }
            (Json::Null, None) => {}
            (value, Some(i)) => {
                if let Some(slot) = target.value_at_mut(i) {
                    merge(slot, value, src);
                }
            }
            (value, None) => {
                let mut fresh = Json::Null;
                merge(&mut fresh, value, src);
                target.push(name.into(), fresh);
            }
        }
    }
    if removed.contains(&true) {
        target.retain_indices(|i| !removed.get(i).copied().unwrap_or(false));
    }
}

/// Where each patch member's name sits in `target` (patch names are unique).
fn positions(target: &Object, patch: &Object) -> Vec<Option<usize>> {
    if target.len().saturating_mul(patch.len()) <= 256 {
        return patch.iter().map(|(name, _)| target.position(name)).collect();
    }
    let index: HashMap<&str, usize> = target
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name, i))
        .collect();
    patch.iter().map(|(name, _)| index.get(name).copied()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::json::to_vec;
    use crate::patch::parse::parse;

    fn merged(target: &str, patch: &str) -> String {
        let mut target = parse(target.as_bytes()).unwrap();
        merge(&mut target, &parse(patch.as_bytes()).unwrap(), &[]);
        String::from_utf8(to_vec(&target, usize::MAX, 0).unwrap()).unwrap()
    }

    #[test]
    fn large_objects_merge_through_an_index_with_the_same_result() {
        let members: Vec<String> = (0..300).map(|i| format!("\"k{i}\":{i}")).collect();
        let target = format!("{{{}}}", members.join(","));
        let patch = r#"{"k299":null,"k1":{"a":null,"b":1e2},"k0":null,"z":[null]}"#;
        let mut expected: Vec<String> = members[1..299].to_vec();
        expected[0] = r#""k1":{"b":1e2}"#.into();
        expected.push(r#""z":[null]"#.into());
        assert_eq!(merged(&target, patch), format!("{{{}}}", expected.join(",")));
    }

    #[test]
    fn new_members_drop_nulls_nested_in_the_patch() {
        assert_eq!(
            merged(r#"{"a":1}"#, r#"{"b":{"c":null,"d":{"e":null,"f":0.10}}}"#),
            r#"{"a":1,"b":{"d":{"f":0.10}}}"#
        );
    }

    #[test]
    fn removing_an_absent_member_changes_nothing() {
        assert_eq!(merged(r#"{"a":1,"b":2}"#, r#"{"x":null}"#), r#"{"a":1,"b":2}"#);
    }
}
