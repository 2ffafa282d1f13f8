//! Invalidation: dropping every variant of a resource, and the generations that make a
//! write's invalidation win over a read that raced with it.
//!
//! Invariant: a store made for a read is refused, or removed, when the resource was
//! invalidated since the read took its [`Generation`]. The read takes it before asking
//! the upstream; [`Cache::invalidate`] advances it before removing anything, and a store
//! checks it again under the resource's shard lock, so an invalidation either refuses the
//! store or finds the entry and removes it: the body a write replaced is never put back.

use std::sync::atomic::{AtomicU64, Ordering::*};

use super::Cache;

/// Generations are striped by resource; a collision only refuses a store. 4096 (32 KiB)
/// keeps such refusals rare when many writes run beside many reads (the cache-tests suite
/// saw a few per run with 256).
const STRIPES: usize = 4096;

/// The state of a resource's invalidations at one moment; see [`Cache::insert_since`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    stripe: usize,
    value: u64,
}

/// One counter per stripe of resources, advanced by every invalidation in it.
pub(super) struct Generations(Box<[AtomicU64]>);

impl Default for Generations {
    fn default() -> Generations {
        Generations((0..STRIPES).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Generations {
    fn of(&self, resource: u64) -> Generation {
        let stripe = stripe(resource);
        let value = self.0.get(stripe).map_or(0, |cell| cell.load(Acquire));
        Generation { stripe, value }
    }

    fn advance(&self, resource: u64) {
        if let Some(cell) = self.0.get(stripe(resource)) {
            cell.fetch_add(1, AcqRel);
        }
    }

    fn changed_since(&self, since: Generation) -> bool {
        self.0
            .get(since.stripe)
            .is_none_or(|cell| cell.load(Acquire) != since.value)
    }
}

fn stripe(resource: u64) -> usize {
    (resource % STRIPES as u64) as usize
}

impl Cache {
    /// The current [`Generation`] of a resource: take it before reading the upstream.
    pub fn generation(&self, route: u32, path: &str) -> Generation {
        self.generations.of(self.resource(route, path))
    }

    /// Whether (route, path) may have been invalidated since `since` was taken.
    pub fn changed_since(&self, since: Generation) -> bool {
        self.generations.changed_since(since)
    }

    /// Drops every entry: what the cache holds can no longer be trusted (cluster
    /// notices may have been missed). Reads in flight are refused their stores.
    pub fn invalidate_all(&self) {
        for cell in self.generations.0.iter() {
            cell.fetch_add(1, AcqRel);
        }
        let resources: Vec<u64> = self.resources.iter().map(|r| *r.key()).collect();
        for resource in resources {
            if self.remove_where(resource, |_| true) > 0 {
                self.invalidations.fetch_add(1, Relaxed);
            }
        }
    }

    /// Drops every variant of (route, path): all queries, key values and `Vary` variants.
    pub fn invalidate(&self, route: u32, path: &str) {
        let resource = self.resource(route, path);
        self.generations.advance(resource);
        if self.remove_where(resource, |entry| entry.is_at(route, path)) > 0 {
            self.invalidations.fetch_add(1, Relaxed);
        }
    }
}
