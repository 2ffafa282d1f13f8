//! One home per resource: everything patchgate coordinates for one (route, upstream
//! path) lives in one [`Resource`], found through one registry.
//!
//! A resource owns its write queue ([`queue`]: the write lock, and the PATCHes waiting to
//! be carried by the holder's write), its read coalescer ([`reads`]: which reads share
//! an upstream exchange), the parsed form of its last written document ([`kept`]), and
//! whether its upstream state is uncertain (a write sent without an answer). With
//! `[cluster]`, the holder of the lock also takes the resource's lease across instances
//! ([`crate::cluster`]), carried in its [`WriteGuard`]; another instance's release wakes
//! it through [`Resources::lease_released`].
//!
//! Removal rule, the only one: the registry holds a resource while a [`Handle`] to it
//! exists (a writer waiting, holding the lock or still landing; a read leading or
//! waiting for an exchange) or while it keeps state (a kept document, the uncertain
//! mark). State is changed only through a handle, so the last handle to go removes an
//! idle resource, under the registry shard's lock, where no handle can be taken: a
//! resource found in the registry is never one being removed.

pub(crate) mod kept;
pub(crate) mod queue;
pub(crate) mod reads;

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dashmap::DashMap;

pub(crate) use kept::Kept;
pub(crate) use queue::{Claimed, Turn, Verdict, WriteGuard, WriteSignature};
pub(crate) use reads::{Join, Role};

type Id = (u32, Box<str>);

/// The registry: resources that someone works on or that keep state.
#[derive(Default)]
pub(crate) struct Resources {
    table: Arc<DashMap<Id, Arc<Resource>>>,
    /// The body sizes of all kept documents, summed; see [`kept`].
    kept_bytes: AtomicUsize,
    /// Which resources keep a document, oldest first: the next to give up its room.
    kept_order: kept::Order,
    /// Resources marked uncertain, for `/metrics` and a fast path on reads.
    uncertain: AtomicUsize,
}

/// What patchgate coordinates for one resource.
#[derive(Default)]
pub(crate) struct Resource {
    /// Live [`Handle`]s; changed only while the registry has this resource, and raised
    /// only under the registry shard's lock, so a resource with none can be removed.
    handles: AtomicUsize,
    queue: queue::Queue,
    reads: reads::Reads,
    kept: std::sync::Mutex<Option<Kept>>,
    uncertain: AtomicBool,
    /// Woken when another instance releases this resource's lease (`[cluster]`).
    lease_released: tokio::sync::Notify,
}

/// A counted reference to a resource in the registry; see the removal rule.
pub(crate) struct Handle {
    resource: Arc<Resource>,
    id: Id,
    resources: Arc<DashMap<Id, Arc<Resource>>>,
}

impl Resources {
    /// The resource of (route, path), made if absent.
    pub(crate) fn get(&self, route: u32, path: &str) -> Handle {
        let id: Id = (route, path.into());
        // Most calls find it: under the shard's read lock, which removal cannot take.
        if let Some(handle) = self.handle(&id) {
            return handle;
        }
        let resource = self.table.entry(id.clone()).or_default();
        resource.handles.fetch_add(1, Ordering::AcqRel);
        Handle {
            resource: Arc::clone(resource.value()),
            id,
            resources: Arc::clone(&self.table),
        }
    }

    /// The resource of (route, path) if the registry has it, without making one.
    fn find(&self, route: u32, path: &str) -> Option<Handle> {
        self.handle(&(route, path.into()))
    }

    fn handle(&self, id: &Id) -> Option<Handle> {
        let resource = self.table.get(id)?;
        resource.handles.fetch_add(1, Ordering::AcqRel);
        Some(Handle {
            resource: Arc::clone(resource.value()),
            id: id.clone(),
            resources: Arc::clone(&self.table),
        })
    }

    /// Whether the upstream state of (route, path) is unknown: its next read and write
    /// must ask the upstream.
    pub(crate) fn is_uncertain(&self, route: u32, path: &str) -> bool {
        // A look, not a handle: reads ask this often, and a handle's drop may lock a shard.
        self.uncertain.load(Ordering::Acquire) > 0
            && self
                .table
                .get(&(route, Box::<str>::from(path)))
                .is_some_and(|r| r.is_uncertain())
    }

    /// An upstream answer showed (route, path) as it is.
    pub(crate) fn confirm(&self, route: u32, path: &str) {
        if self.uncertain.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(resource) = self.find(route, path) {
            resource.confirm(self);
        }
    }

    /// Wakes this instance's writer waiting for the lease of (route, path), if any.
    pub(crate) fn lease_released(&self, route: u32, path: &str) {
        if let Some(resource) = self.table.get(&(route, Box::<str>::from(path))) {
            resource.lease_released.notify_waiters();
        }
    }

    /// Resources whose state is unknown right now.
    pub(crate) fn uncertain(&self) -> usize {
        self.uncertain.load(Ordering::Acquire)
    }

    /// Resources in the registry (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

impl Resource {
    pub(crate) fn is_uncertain(&self) -> bool {
        self.uncertain.load(Ordering::Acquire)
    }

    /// Nobody holds it and it keeps nothing: the registry may forget it.
    fn is_idle(&self) -> bool {
        self.handles.load(Ordering::Acquire) == 0
            && !self.is_uncertain()
            && self.kept.lock().map(|k| k.is_none()).unwrap_or(true)
    }
}

impl Handle {
    /// Resolves at the next release notice of this resource's lease; `enable` it before
    /// asking Redis, so that a notice in between is not missed.
    pub(crate) fn lease_released(&self) -> tokio::sync::futures::Notified<'_> {
        self.resource.lease_released.notified()
    }

    /// A write sent without an answer: the upstream may or may not hold it.
    pub(crate) fn mark_uncertain(&self, resources: &Resources) {
        if !self.resource.uncertain.swap(true, Ordering::AcqRel) {
            resources.uncertain.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// An upstream answer showed this resource as it is.
    pub(crate) fn confirm(&self, resources: &Resources) {
        if self.resource.uncertain.swap(false, Ordering::AcqRel) {
            resources.uncertain.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        // This handle keeps the resource in the registry, so no lock is needed.
        self.resource.handles.fetch_add(1, Ordering::AcqRel);
        Handle {
            resource: Arc::clone(&self.resource),
            id: self.id.clone(),
            resources: Arc::clone(&self.resources),
        }
    }
}

impl Deref for Handle {
    type Target = Resource;

    fn deref(&self) -> &Resource {
        &self.resource
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.resource.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last handle: under the shard's lock, where no new one can be taken, the
        // resource goes unless it keeps state or someone took a handle meanwhile.
        self.resources.remove_if(&self.id, |_, resource| {
            Arc::ptr_eq(resource, &self.resource) && resource.is_idle()
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_stays_while_held_or_uncertain_and_goes_when_idle() {
        let resources = Resources::default();
        let first = resources.get(1, "/a");
        let second = resources.get(1, "/a");
        assert!(Arc::ptr_eq(&first.resource, &second.resource));
        assert_eq!(resources.len(), 1);
        drop(first);
        assert_eq!(resources.len(), 1, "still held");
        second.mark_uncertain(&resources);
        drop(second);
        assert_eq!(resources.len(), 1, "uncertain is state");
        assert!(resources.is_uncertain(1, "/a"));
        assert!(!resources.is_uncertain(1, "/b") && !resources.is_uncertain(2, "/a"));
        assert_eq!(resources.uncertain(), 1);
        resources.confirm(1, "/a");
        assert!(!resources.is_uncertain(1, "/a"));
        assert_eq!(resources.uncertain(), 0);
        assert_eq!(resources.len(), 0, "the confirming handle removed it");
    }

    #[test]
    fn looking_for_a_resource_makes_none() {
        let resources = Resources::default();
        assert!(!resources.is_uncertain(1, "/a"));
        resources.confirm(1, "/a");
        assert_eq!(resources.len(), 0);
    }
}
