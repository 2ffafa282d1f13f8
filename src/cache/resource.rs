//! The cache's map key, one resource (route, upstream path), and its value, the
//! resource's stored variants.
//!
//! Looked up through the [`ResourceRef`] trait object so that a `get` borrows the
//! request's path instead of allocating a copy on every read.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::Entry;

/// The map key of a resource. Looked up through [`ResourceRef`] so that a `get` borrows
/// the request's path instead of allocating a copy. The path is the one its entries hold.
#[derive(PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) route: u32,
    pub(super) path: Arc<str>,
}

/// A resource's variants, oldest first. Nearly always one, held without a `Vec`'s own
/// allocation: with small documents every allocation an entry makes shows in memory.
pub(super) enum Variants {
    One(Arc<Entry>),
    Many(Vec<Arc<Entry>>),
}

impl Variants {
    pub(super) fn as_slice(&self) -> &[Arc<Entry>] {
        match self {
            Variants::One(entry) => std::slice::from_ref(entry),
            Variants::Many(entries) => entries,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub(super) fn push(&mut self, entry: Arc<Entry>) {
        match self {
            Variants::Many(entries) if entries.is_empty() => *self = Variants::One(entry),
            Variants::Many(entries) => entries.push(entry),
            Variants::One(first) => *self = Variants::Many(vec![Arc::clone(first), entry]),
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Arc<Entry>) -> bool) {
        match self {
            Variants::Many(entries) => entries.retain(|entry| keep(entry)),
            Variants::One(entry) => {
                if !keep(entry) {
                    *self = Variants::Many(Vec::new());
                }
            }
        }
    }
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
