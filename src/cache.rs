//! STUB
use crate::etag::EntityTag;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    pub etag: EntityTag,
    pub upstream_etag: Option<HeaderValue>,
    pub last_modified: Option<SystemTime>,
    pub headers: HeaderMap,
    pub stored_at: Instant,
}
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub route: u32,
    pub path: Box<str>,
    pub query: Option<Box<str>>,
    pub key_values: Box<[Option<HeaderValue>]>,
}
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub invalidations: u64,
    pub bytes: u64,
    pub entries: u64,
}
pub struct Cache;
pub struct FlightGuard;
pub struct Waiter;
impl Waiter {
    pub async fn wait(self) {}
}
pub enum Flight {
    Leader(FlightGuard),
    Follower(Waiter),
}
impl Cache {
    pub fn new(_max_bytes: u64, _max_entry_bytes: u64) -> Cache {
        Cache
    }
    pub fn stats(&self) -> Stats {
        Stats::default()
    }
    pub fn get(&self, _key: &Key, _request: &HeaderMap) -> Option<Arc<Entry>> {
        None
    }
    pub fn insert(&self, _key: Key, _request: &HeaderMap, entry: Entry) -> Option<Arc<Entry>> {
        Some(Arc::new(entry))
    }
    pub fn invalidate(&self, _route: u32, _path: &str) {}
    pub fn join(&self, _key: &Key) -> Flight {
        Flight::Leader(FlightGuard)
    }
}
