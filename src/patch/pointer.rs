//! RFC 6901 JSON Pointer evaluation over [`Json`], plus the add and remove primitives of
//! RFC 6902 §4.1 and §4.2 that every operation is built from.
//!
//! Syntax (leading `/`, `~0`/`~1` escapes) is checked when the patch is parsed, by jsonptr;
//! here a pointer only fails because of the document: a missing member, an index out of
//! bounds or not written as RFC 6901 §4 requires (`0` or no leading zero), a scalar in the way.

use json_patch::jsonptr::index::Index;
use json_patch::jsonptr::{Pointer, Token};

use super::json::Json;
use super::scan;

/// RFC 6901 §4: the value a pointer references, in a parsed document (a raw container of
/// an indexed one cannot be entered here: [`get_mut`] expands them).
pub(super) fn get<'a>(root: &'a Json, ptr: &Pointer) -> Result<&'a Json, String> {
    let mut current = root;
    for token in ptr.tokens() {
        current = match current {
            Json::Object(obj) => obj.get(&token.decoded()).ok_or_else(|| no_member(&token))?,
            Json::Array(items) => items
                .get(index(&token, items.len())?)
                .ok_or_else(|| bad_index(&token))?,
            other => return Err(into_scalar(other, &token)),
        };
    }
    Ok(current)
}

/// RFC 6901 §4, for a value to change in place. Raw containers of an indexed document
/// (spans of `src`) on the way are expanded one level each.
pub(super) fn get_mut<'a>(root: &'a mut Json, ptr: &Pointer, src: &[u8]) -> Result<&'a mut Json, String> {
    let mut current = root;
    for token in ptr.tokens() {
        scan::expand(current, src);
        current = match current {
            Json::Object(obj) => obj.get_mut(&token.decoded()).ok_or_else(|| no_member(&token))?,
            Json::Array(items) => {
                let i = index(&token, items.len())?;
                items.get_mut(i).ok_or_else(|| bad_index(&token))?
            }
            other => return Err(into_scalar(other, &token)),
        };
    }
    Ok(current)
}

/// RFC 6902 §4.1 add: the root is replaced; an object member is set (in place if it exists);
/// an array gets an insertion at the index, or at its end for `-`.
/// Returns the value that was replaced, if any.
pub(super) fn add(root: &mut Json, ptr: &Pointer, value: Json, src: &[u8]) -> Result<Option<Json>, String> {
    let Some((parent, last)) = ptr.split_back() else {
        return Ok(Some(std::mem::replace(root, value)));
    };
    let parent = get_mut(root, parent, src)?;
    scan::expand(parent, src);
    match parent {
        Json::Object(obj) => Ok(obj.insert(&last.decoded(), value)),
        Json::Array(items) => {
            let i = match last.to_index() {
                Ok(Index::Next) => items.len(),
                Ok(Index::Num(i)) if i <= items.len() => i,
                Ok(Index::Num(i)) => return Err(out_of_bounds(i, items.len())),
                Err(_) => return Err(bad_index(&last)),
            };
            items.insert(i, value);
            Ok(None)
        }
        other => Err(into_scalar(other, &last)),
    }
}

/// RFC 6902 §4.2 remove; the other members and items keep their order.
pub(super) fn remove(root: &mut Json, ptr: &Pointer, src: &[u8]) -> Result<Json, String> {
    let Some((parent, last)) = ptr.split_back() else {
        return Err("the whole document cannot be removed".into());
    };
    let parent = get_mut(root, parent, src)?;
    scan::expand(parent, src);
    match parent {
        Json::Object(obj) => obj.remove(&last.decoded()).ok_or_else(|| no_member(&last)),
        Json::Array(items) => {
            let i = index(&last, items.len())?;
            Ok(items.remove(i))
        }
        other => Err(into_scalar(other, &last)),
    }
}

/// How many tokens a pointer has: the nesting level of the value it names.
pub(super) fn level(ptr: &Pointer) -> usize {
    ptr.tokens().count()
}

/// An existing array element (RFC 6901 §4: `-` names the element after the last one).
fn index(token: &Token<'_>, len: usize) -> Result<usize, String> {
    match token.to_index() {
        Ok(Index::Num(i)) if i < len => Ok(i),
        Ok(Index::Num(i)) => Err(out_of_bounds(i, len)),
        Ok(Index::Next) => Err(format!("\"-\" names no existing element (array length {len})")),
        Err(_) => Err(bad_index(token)),
    }
}

fn no_member(token: &Token<'_>) -> String {
    format!("member {:?} does not exist", token.decoded())
}

fn bad_index(token: &Token<'_>) -> String {
    format!("{:?} is not an array index", token.decoded())
}

fn out_of_bounds(i: usize, len: usize) -> String {
    format!("index {i} is out of bounds (array length {len})")
}

fn into_scalar(value: &Json, token: &Token<'_>) -> String {
    format!("cannot reach {:?} inside a {}", token.decoded(), value.kind())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::json::to_vec;
    use crate::patch::parse::parse;

    fn doc(text: &str) -> Json {
        parse(text.as_bytes()).unwrap()
    }

    fn ptr(s: &str) -> &Pointer {
        Pointer::parse(s).unwrap()
    }

    fn text(v: &Json) -> String {
        String::from_utf8(to_vec(v, usize::MAX, 0).unwrap()).unwrap()
    }

    const RFC6901: &str =
        r#"{"foo":["bar","baz"],"":0,"a/b":1,"c%d":2,"e^f":3,"g|h":4,"i\\j":5,"k\"l":6," ":7,"m~n":8}"#;

    #[test]
    fn rfc6901_section5_examples_resolve() {
        let d = doc(RFC6901);
        for (p, expected) in [
            ("", RFC6901),
            ("/foo", r#"["bar","baz"]"#),
            ("/foo/0", r#""bar""#),
            ("/", "0"),
            ("/a~1b", "1"),
            ("/c%d", "2"),
            ("/e^f", "3"),
            ("/g|h", "4"),
            ("/i\\j", "5"),
            ("/k\"l", "6"),
            ("/ ", "7"),
            ("/m~0n", "8"),
        ] {
            assert_eq!(text(get(&d, ptr(p)).unwrap()), expected, "{p}");
        }
    }

    #[test]
    fn tilde_zero_one_decodes_to_tilde_one_not_slash() {
        let d = doc(r#"{"~1":"tilde-one","/":"slash"}"#);
        assert_eq!(text(get(&d, ptr("/~01")).unwrap()), r#""tilde-one""#);
        assert_eq!(text(get(&d, ptr("/~1")).unwrap()), r#""slash""#);
    }

    #[test]
    fn array_indices_must_be_canonical_and_in_bounds() {
        let d = doc(r#"{"a":[10,20,30]}"#);
        assert_eq!(text(get(&d, ptr("/a/0")).unwrap()), "10");
        assert_eq!(
            get(&d, ptr("/a/01")).unwrap_err(),
            r#""01" is not an array index"#
        );
        assert_eq!(
            get(&d, ptr("/a/+1")).unwrap_err(),
            r#""+1" is not an array index"#
        );
        assert_eq!(get(&d, ptr("/a/")).unwrap_err(), r#""" is not an array index"#);
        assert_eq!(
            get(&d, ptr("/a/3")).unwrap_err(),
            "index 3 is out of bounds (array length 3)"
        );
        assert_eq!(
            get(&d, ptr("/a/99999999999999999999999")).unwrap_err(),
            r#""99999999999999999999999" is not an array index"#
        );
        assert_eq!(
            get(&d, ptr("/a/-")).unwrap_err(),
            "\"-\" names no existing element (array length 3)"
        );
    }

    #[test]
    fn leading_zero_token_is_an_ordinary_member_name_in_objects() {
        let d = doc(r#"{"01":"x"}"#);
        assert_eq!(text(get(&d, ptr("/01")).unwrap()), r#""x""#);
    }

    #[test]
    fn pointer_into_a_scalar_fails() {
        let d = doc(r#"{"a":1}"#);
        assert_eq!(
            get(&d, ptr("/a/b")).unwrap_err(),
            r#"cannot reach "b" inside a number"#
        );
    }

    #[test]
    fn add_appends_with_dash_and_inserts_at_len() {
        let mut d = doc("[1,2]");
        add(&mut d, ptr("/-"), doc("3"), &[]).unwrap();
        add(&mut d, ptr("/3"), doc("4"), &[]).unwrap();
        add(&mut d, ptr("/0"), doc("0"), &[]).unwrap();
        assert_eq!(text(&d), "[0,1,2,3,4]");
        assert_eq!(
            add(&mut d, ptr("/6"), doc("9"), &[]).unwrap_err(),
            "index 6 is out of bounds (array length 5)"
        );
    }

    #[test]
    fn add_existing_member_keeps_its_position() {
        let mut d = doc(r#"{"a":1,"b":2,"c":3}"#);
        let old = add(&mut d, ptr("/b"), doc("20"), &[]).unwrap();
        assert_eq!(text(&old.unwrap()), "2");
        assert_eq!(text(&d), r#"{"a":1,"b":20,"c":3}"#);
    }

    #[test]
    fn remove_keeps_member_order() {
        let mut d = doc(r#"{"a":1,"b":2,"c":3,"d":4}"#);
        assert_eq!(text(&remove(&mut d, ptr("/b"), &[]).unwrap()), "2");
        assert_eq!(text(&d), r#"{"a":1,"c":3,"d":4}"#);
        assert_eq!(
            remove(&mut d, ptr(""), &[]).unwrap_err(),
            "the whole document cannot be removed"
        );
        assert_eq!(
            remove(&mut d, ptr("/x"), &[]).unwrap_err(),
            r#"member "x" does not exist"#
        );
    }
}
