//! The response cache: `200` GET bodies with what it takes to answer GET, HEAD and `304`
//! without the upstream, bounded in bytes, with request coalescing ([`Cache::join`]).
//!
//! RFC 9111 §3 (storing), §4.1 (Vary), §5.2.2.5 (`no-store`), §5.2.2.7 (`private`:
//! stored only under a requester's key values). All variants of one
//! resource (route, upstream path) live in one map entry, so a write drops them at once.
//!
//! Invariants:
//! - [`Stats::bytes`] never exceeds `max_bytes`, not even transiently, and it is never
//!   less than the charge of the entries in the map: room is reserved before an entry
//!   becomes visible and released only after it is gone (`budget`).
//! - A write's invalidation wins over a read that raced with it: a read's store is
//!   refused, or removed, when the resource was invalidated since the read began; the
//!   generations are checked under the resource's shard lock (`invalidation`).
//!
//! This file is the store: lookups, storing and replacing variants. `entry` builds entries
//! from upstream responses, `place` says which requests a stored one serves, `budget`
//! charges and evicts (CLOCK, in `clock`), `invalidation` drops resources, `header_sets`
//! shares header maps between entries, `resource` is the map's value, `policy` the
//! storing rules. Which reads share an upstream exchange is not the cache's business:
//! see `crate::resource::reads`.

mod budget;
mod clock;
mod entry;
pub(crate) mod freshness;
mod header_sets;
mod history;
mod invalidation;
mod place;
mod policy;
mod resource;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use dashmap::{DashMap, Entry as MapEntry};
use http::{HeaderMap, HeaderName};

use budget::Budget;
pub use budget::ENTRY_OVERHEAD;
use clock::Ring;
pub use entry::Entry;
pub(crate) use entry::{make_entry, replayed, tag_room};
use header_sets::HeaderSets;
pub use invalidation::Generation;
use invalidation::Generations;
use place::{Place, Variant};
use policy::Selectors;
use resource::{Prehashed, Variants};

use crate::requester::Requester;

/// Identifies one request's view of a resource. Built by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub route: u32,
    pub path: Box<str>,
    pub query: Option<Box<str>>,
    /// Who is asking (see [`crate::requester`]).
    pub requester: Requester,
}

impl Key {
    /// Whether the request carried a value of one of `cache.key_headers`: a variant
    /// stored under such a key is that requester's alone (RFC 9111 §5.2.2.7).
    pub fn has_requester(&self) -> bool {
        !self.requester.is_anonymous()
    }
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    /// `invalidate` calls that dropped at least one entry.
    pub invalidations: u64,
    /// Accounted bytes: the charge of every entry, see [`Cache::insert`].
    pub bytes: u64,
    pub entries: u64,
}

pub struct Cache {
    /// By [`Cache::resource`], the keyed hash of (route, path).
    resources: DashMap<u64, Variants, Prehashed>,
    budget: Budget,
    /// Eviction order; its lock is never taken together with a map lock.
    ring: Ring,
    generations: Generations,
    /// Recent versions by key and ETag, within its own share of `max_bytes`.
    history: history::History,
    header_sets: HeaderSets,
    hasher: RandomState,
    /// Changed by a reload ([`Cache::resize`]).
    max_entry_bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

impl Cache {
    pub fn new(max_bytes: u64, max_entry_bytes: u64) -> Cache {
        Cache::with_history(max_bytes, max_entry_bytes, 0)
    }

    /// A cache whose `max_bytes` includes `history_bytes` for recent versions
    /// ([`Cache::remember`]).
    pub fn with_history(max_bytes: u64, max_entry_bytes: u64, history_bytes: u64) -> Cache {
        let history_bytes = history_bytes.min(max_bytes);
        Cache {
            resources: DashMap::default(),
            budget: Budget::new(max_bytes - history_bytes),
            history: history::History::new(history_bytes),
            ring: Ring::default(),
            generations: Generations::default(),
            header_sets: HeaderSets::default(),
            hasher: RandomState::new(),
            max_entry_bytes: AtomicU64::new(max_entry_bytes),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    /// New bounds (a reload): as [`Cache::with_history`] would set them. Lowering them
    /// evicts at once (CLOCK order) down to the new bound; from the moment it is lowered
    /// no reservation passes it.
    pub fn resize(&self, max_bytes: u64, max_entry_bytes: u64, history_bytes: u64) {
        let history_bytes = history_bytes.min(max_bytes);
        self.max_entry_bytes.store(max_entry_bytes, Relaxed);
        self.budget.set_max_bytes(max_bytes - history_bytes);
        self.history.set_max_bytes(history_bytes);
        self.evict_to_bound();
    }

    /// Drops the entries of every route id `live` refuses (routes a reload removed or
    /// changed: no request reaches them any more), giving their bytes back.
    pub fn retain_routes(&self, live: impl Fn(u32) -> bool) {
        let doomed: Vec<u64> = self
            .resources
            .iter()
            .filter(|r| {
                r.value()
                    .as_slice()
                    .iter()
                    .any(|entry| entry.place.as_ref().is_some_and(|place| !live(place.route)))
            })
            .map(|r| *r.key())
            .collect();
        for resource in doomed {
            self.remove_where(resource, |entry| {
                entry.place.as_ref().is_some_and(|place| !live(place.route))
            });
        }
    }

    /// The entry for `key` whose `Vary`-named request headers match `request`
    /// (RFC 9111 §4.1; the newest when several match). Counts a hit or a miss.
    pub fn get(&self, key: &Key, request: &HeaderMap) -> Option<Arc<Entry>> {
        let found = self.lookup(key, request);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Relaxed);
        found
    }

    fn lookup(&self, key: &Key, request: &HeaderMap) -> Option<Arc<Entry>> {
        let variants = self.resources.get(&self.resource(key.route, &key.path))?;
        let selector = self.selector(key);
        let entry = variants
            .as_slice()
            .iter()
            .rev()
            .find(|entry| entry.serves(key, selector, request))?;
        // Load first: a hot entry's bit is already set, and not writing it keeps its
        // cache line shared between cores.
        if let Some(place) = &entry.place
            && !place.referenced.load(Relaxed)
        {
            place.referenced.store(true, Relaxed);
        }
        Some(Arc::clone(entry))
    }

    /// Stores a `200` response to `request` (RFC 9111 §3) and returns it, or gives it
    /// back when it is not stored: body over `max_entry_bytes`, `Cache-Control: no-store`,
    /// `Cache-Control: private` for a key without a requester, `Vary: *` (or an
    /// unparsable `Vary`), a charge over `max_bytes`, or no room that
    /// could be made (every other entry is in the middle of an insert or a removal).
    ///
    /// The `Vary` names in `entry.headers` and their values in `request` become part of
    /// the variant's identity; stored variants this request would select are replaced.
    /// The charge is body + header names and values + key strings + selecting values +
    /// twice the upstream tag + [`ENTRY_OVERHEAD`]. Least recently used
    /// entries (CLOCK) are evicted first; the total never exceeds `max_bytes`. Bodies
    /// still referenced by callers through the returned `Arc`s are not counted.
    pub fn insert(&self, key: Key, request: &HeaderMap, entry: Entry) -> Result<Arc<Entry>, Entry> {
        self.store(key, request, entry, None, None)
    }

    /// [`Cache::insert`], unless the resource was invalidated since `since`: a read that
    /// raced with a write must not put back the body the write replaced. Checked under
    /// the resource's shard lock, so an `invalidate` either refuses it or removes it.
    pub fn insert_since(
        &self,
        since: Generation,
        key: Key,
        request: &HeaderMap,
        entry: Entry,
    ) -> Result<Arc<Entry>, Entry> {
        self.store(key, request, entry, Some(since), None)
    }

    /// Stores `new` in place of `old` (the same variant with updated headers after an
    /// upstream `304`, RFC 9111 §4.3.4): only while `old` is still stored, so a newer
    /// body stored meanwhile stays, and, as [`Cache::insert_since`], only if the resource
    /// was not invalidated since `since`. When `new` is not stored, `old` is dropped
    /// too: its headers are outdated.
    pub fn replace(
        &self,
        since: Generation,
        old: &Arc<Entry>,
        key: Key,
        request: &HeaderMap,
        new: Entry,
    ) -> Result<Arc<Entry>, Entry> {
        let stored = self.store(key, request, new, Some(since), Some(old));
        if stored.is_err()
            && let Some(place) = &old.place
        {
            let resource = self.resource(place.route, &place.path);
            self.remove_where(resource, |held| Arc::ptr_eq(held, old));
        }
        stored
    }

    /// Whether `entry` is stored right now.
    pub fn contains(&self, entry: &Arc<Entry>) -> bool {
        let Some(place) = &entry.place else {
            return false;
        };
        self.resources
            .get(&self.resource(place.route, &place.path))
            .is_some_and(|variants| variants.as_slice().iter().any(|held| Arc::ptr_eq(held, entry)))
    }

    fn store(
        &self,
        key: Key,
        request: &HeaderMap,
        entry: Entry,
        since: Option<Generation>,
        instead_of: Option<&Arc<Entry>>,
    ) -> Result<Arc<Entry>, Entry> {
        let refused = || since.is_some_and(|since| self.changed_since(since));
        let is_old = |held: &Arc<Entry>| instead_of.is_some_and(|old| Arc::ptr_eq(held, old));
        // A `private` response may be stored only where it cannot reach another user:
        // under key values no other requester has (RFC 9111 §5.2.2.7).
        let shared_private = !key.has_requester() && policy::private(&entry.headers);
        if entry.body_len() as u64 > self.max_entry_bytes.load(Relaxed)
            || policy::no_store(&entry.headers)
            || shared_private
            || refused()
        {
            return Err(entry);
        }
        let Some(names) = policy::vary_names(&entry.headers) else {
            return Err(entry);
        };
        let vary = Selectors::capture(names, request);
        let charge = budget::charge(&key, &vary, &entry);
        if charge > self.budget.max_bytes() {
            return Err(entry);
        }
        let selector = self.selector(&key);
        let Key {
            route,
            path,
            query,
            requester,
        } = key;
        let resource = self.resource(route, &path);
        let mut entry = entry;
        entry.headers = self.header_sets.share(Arc::clone(&entry.headers));
        entry.place = Some(Place {
            route,
            path,
            selector,
            variant: Variant::boxed(query, requester, vary),
            charge,
            referenced: AtomicBool::new(false),
            no_cache: policy::no_cache(&entry.headers),
        });
        let entry = Arc::new(entry);
        let replaces = |old: &Arc<Entry>| old.serves_as(&entry, request);
        if !self.budget.try_reserve(charge) {
            // Full: drop what this response replaces before evicting anything else
            // (but the entry it must replace in place goes only as it is replaced).
            self.remove_where(resource, |held| replaces(held) && !is_old(held));
            if !self.reserve_evicting(charge) {
                return Err(unstored(entry));
            }
        }
        let mut replaced = Vec::new();
        let mut keep = |old: &Arc<Entry>| {
            let keep = !replaces(old) && !is_old(old);
            if !keep {
                replaced.push(Arc::clone(old));
            }
            keep
        };
        let stored = match self.resources.entry(resource) {
            _ if refused() => false,
            // In place of an entry that is gone: what took its place (a newer body) stays.
            MapEntry::Occupied(variants)
                if instead_of.is_some() && !variants.get().as_slice().iter().any(is_old) =>
            {
                false
            }
            MapEntry::Occupied(mut variants) => {
                let variants = variants.get_mut();
                variants.retain(&mut keep);
                variants.push(Arc::clone(&entry));
                true
            }
            MapEntry::Vacant(_) if instead_of.is_some() => false,
            MapEntry::Vacant(vacant) => {
                vacant.insert(Variants::One(Arc::clone(&entry)));
                true
            }
        };
        self.budget.forget(&replaced);
        if !stored {
            self.budget.release(charge, 1);
            return Err(unstored(entry));
        }
        self.inserts.fetch_add(1, Relaxed);
        self.ring.push(&entry, self.budget.entries());
        Ok(entry)
    }

    /// A kept header set of exactly the fields of `headers` that `keep` picks (in this
    /// order), else a new one of detached copies of them, kept for the next entries: an
    /// entry's headers are then built only the first time.
    pub fn header_set(&self, headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Arc<HeaderMap> {
        self.header_sets.pick(headers, keep)
    }

    /// Records `entry` as the newest version of `key`, keeping at most `keep` of them.
    /// Never what the cache itself could not keep for `key`: `no-store`, `private` without
    /// a requester, `Vary: *`.
    /// Returns whether it is a version not seen before.
    pub fn remember(&self, key: &Key, entry: &Arc<Entry>, keep: usize) -> bool {
        let headers = &entry.headers;
        if keep == 0
            || self.history.is_newest(key, entry)
            || policy::no_store(headers)
            || (!key.has_requester() && policy::private(headers))
            || policy::vary_names(headers).is_none()
        {
            return false;
        }
        self.history.record(key, entry, keep);
        true
    }

    /// The recent version of `key` tagged `tag` (strong comparison).
    pub fn version(&self, key: &Key, tag: &crate::etag::EntityTag) -> Option<Arc<Entry>> {
        self.history.find(key, tag)
    }

    /// Bytes charged to recent versions.
    pub fn history_bytes(&self) -> u64 {
        self.history.bytes()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            inserts: self.inserts.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            bytes: self.budget.bytes(),
            entries: self.budget.entries(),
        }
    }

    fn selector(&self, key: &Key) -> u64 {
        self.hasher.hash_one((&key.query, &key.requester))
    }

    /// The map key of (route, path): a keyed hash, so that requests cannot aim at
    /// collisions.
    fn resource(&self, route: u32, path: &str) -> u64 {
        self.hasher.hash_one((route, path))
    }

    /// Removes the variants under `resource` that `doomed` picks; returns how many. The
    /// map entry goes with its last variant.
    fn remove_where(&self, resource: u64, doomed: impl Fn(&Arc<Entry>) -> bool) -> u64 {
        let mut removed = Vec::new();
        self.resources.remove_if_mut(&resource, |_, variants| {
            variants.retain(|entry| {
                let keep = !doomed(entry);
                if !keep {
                    removed.push(Arc::clone(entry));
                }
                keep
            });
            variants.is_empty()
        });
        self.budget.forget(&removed);
        removed.len() as u64
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("max_bytes", &self.budget.max_bytes())
            .field("max_entry_bytes", &self.max_entry_bytes.load(Relaxed))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// An entry that was not stored, back as the caller's own (the cache never shared it).
fn unstored(entry: Arc<Entry>) -> Entry {
    match Arc::try_unwrap(entry) {
        Ok(mut entry) => {
            entry.place = None;
            entry
        }
        Err(shared) => shared.duplicate(),
    }
}
