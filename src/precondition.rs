//! STUB
use crate::etag::EntityTag;
use std::time::SystemTime;
#[derive(Clone, Debug, Default)]
pub struct Conditions;
impl Conditions {
    pub fn from_headers(_headers: &http::HeaderMap) -> Conditions {
        Conditions
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn has_write_precondition(&self) -> bool {
        false
    }
    pub fn any_write_condition(&self) -> bool {
        false
    }
}
#[derive(Clone, Copy, Debug)]
pub struct Current<'a> {
    pub exists: bool,
    pub etag: Option<&'a EntityTag>,
    pub last_modified: Option<SystemTime>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    NotModified,
    Failed,
}
pub fn evaluate(_conditions: &Conditions, _current: &Current<'_>, _safe: bool) -> Outcome {
    Outcome::Proceed
}
