//! STUB
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
impl Cache {
    pub fn new(_max_bytes: u64, _max_entry_bytes: u64) -> Cache {
        Cache
    }
    pub fn stats(&self) -> Stats {
        Stats::default()
    }
}
