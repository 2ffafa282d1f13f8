//! The cache's map: a resource (route, upstream path) is found by a keyed hash of it, and
//! its value lists the variants stored under that hash.
//!
//! Keying by the hash keeps a map bucket at 24 bytes and the path in one place, the
//! entry; two resources whose hashes collide share a bucket, and every lookup compares
//! the path itself ([`super::Entry::serves`]). A map keyed by (route, path) holds a
//! second copy of every path: about 3 % more resident memory with 1 KiB documents.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::Entry;

/// The map's hasher: its keys are already keyed hashes (`RandomState`), so they are used
/// as they are.
pub(super) type Prehashed = BuildHasherDefault<PrehashedHasher>;

#[derive(Default)]
pub(super) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else is folded in rather than lost.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The variants under one hash, oldest first. Nearly always one, held without an
/// allocation of its own: with small documents every allocation an entry makes shows.
pub(super) enum Variants {
    One(Arc<Entry>),
    Many(Box<[Arc<Entry>]>),
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
        *self = match self.as_slice() {
            [] => Variants::One(entry),
            held => held
                .iter()
                .cloned()
                .chain([entry])
                .collect::<Vec<_>>()
                .into_boxed_slice()
                .into(),
        };
    }

    /// Keeps the variants `keep` approves; it sees each once.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Arc<Entry>) -> bool) {
        match self {
            Variants::One(entry) => {
                if !keep(entry) {
                    *self = Variants::Many(Box::new([]));
                }
            }
            Variants::Many(entries) => {
                let kept: Vec<Arc<Entry>> = entries.iter().filter(|entry| keep(entry)).cloned().collect();
                if kept.len() != entries.len() {
                    *self = kept.into_boxed_slice().into();
                }
            }
        }
    }
}

impl From<Box<[Arc<Entry>]>> for Variants {
    fn from(entries: Box<[Arc<Entry>]>) -> Variants {
        match <Box<[Arc<Entry>; 1]>>::try_from(entries) {
            Ok(one) => {
                let [entry] = *one;
                Variants::One(entry)
            }
            Err(entries) => Variants::Many(entries),
        }
    }
}
