//! The cache's map key: one resource, (route, upstream path).
//!
//! Looked up through the [`ResourceRef`] trait object so that a `get` borrows the
//! request's path instead of allocating a copy on every read.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The map key of a resource. Looked up through [`ResourceRef`] so that a `get` borrows
/// the request's path instead of allocating a copy.
#[derive(PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) route: u32,
    pub(super) path: Box<str>,
}

pub(super) trait ResourceRef {
    fn route(&self) -> u32;
    fn path(&self) -> &str;
}

impl ResourceRef for Resource {
    fn route(&self) -> u32 {
        self.route
    }
    fn path(&self) -> &str {
        &self.path
    }
}

impl ResourceRef for (u32, &str) {
    fn route(&self) -> u32 {
        self.0
    }
    fn path(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn ResourceRef + 'a> for Resource {
    fn borrow(&self) -> &(dyn ResourceRef + 'a) {
        self
    }
}

// `Borrow` requires the owned and borrowed forms to hash alike: both hash through here.
impl Hash for dyn ResourceRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.route().hash(state);
        self.path().hash(state);
    }
}

impl Hash for Resource {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn ResourceRef).hash(state);
    }
}

impl PartialEq for dyn ResourceRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.route() == other.route() && self.path() == other.path()
    }
}

impl Eq for dyn ResourceRef + '_ {}
