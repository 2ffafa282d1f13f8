//! The parsed form of recently written documents, kept between writes so that the next
//! PATCH of a hot document does not parse it again.
//!
//! Invariant: a kept document is handed out only for the very cache entry it was made
//! from. The table holds a `Weak` to that entry, which keeps its allocation from being
//! reused, so pointer equality means "the same entry", and an entry's body never changes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;

use crate::cache::Entry;
use crate::patch::Document;

/// The text size of all kept documents together; their parsed trees take a few times it.
const BUDGET_BYTES: usize = 1 << 20;
/// Larger documents are not kept.
const MAX_SOURCE_BYTES: usize = 64 * 1024;

#[derive(Default)]
pub(crate) struct Parsed {
    table: DashMap<(u32, Box<str>), Kept>,
    /// The body sizes of the kept documents, summed.
    bytes: AtomicUsize,
}

struct Kept {
    entry: Weak<Entry>,
    doc: Document,
    size: usize,
}

impl Parsed {
    /// The parsed form of `entry` if it is kept, taken out: the caller is about to change
    /// it, under the resource's write lock.
    pub(crate) fn take(&self, route: u32, path: &str, entry: &Arc<Entry>) -> Option<Document> {
        let (_, kept) = self.table.remove(&(route, Box::from(path)))?;
        self.release(kept.size);
        std::ptr::eq(kept.entry.as_ptr(), Arc::as_ptr(entry)).then_some(kept.doc)
    }

    /// Keeps `doc` as the parsed form of `entry`; the caller has checked that `doc`
    /// serializes to `entry.body`.
    pub(crate) fn keep(&self, route: u32, path: &str, entry: &Arc<Entry>, doc: Document) {
        if entry.body_len() > MAX_SOURCE_BYTES {
            return;
        }
        let key = (route, Box::from(path));
        let size = entry.body_len();
        // Any kept document makes room: this is a small working set, not a cache.
        while self.bytes.load(Ordering::Relaxed) + size > BUDGET_BYTES {
            let victim = self.table.iter().next().map(|e| e.key().clone());
            let Some((_, old)) = victim.and_then(|v| self.table.remove(&v)) else {
                break;
            };
            self.release(old.size);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let kept = Kept {
            entry: Arc::downgrade(entry),
            doc,
            size,
        };
        if let Some(old) = self.table.insert(key, kept) {
            self.release(old.size);
        }
    }

    fn release(&self, size: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(size))
            });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::etag::EntityTag;

    fn entry(body: &str) -> Arc<Entry> {
        Arc::new(Entry::new(
            body.as_bytes(),
            &EntityTag::from_body(body.as_bytes()),
            Arc::default(),
        ))
    }

    #[test]
    fn a_kept_document_serves_only_its_own_entry_and_only_once() {
        let parsed = Parsed::default();
        let first = entry(r#"{"a":1}"#);
        let same_bytes = entry(r#"{"a":1}"#);
        parsed.keep(1, "/d", &first, Document::parse(&first.body()).unwrap());
        assert!(
            parsed.take(1, "/d", &same_bytes).is_none(),
            "another entry, even with equal bytes"
        );
        parsed.keep(1, "/d", &first, Document::parse(&first.body()).unwrap());
        assert!(parsed.take(2, "/d", &first).is_none(), "another route");
        let doc = parsed.take(1, "/d", &first).unwrap();
        assert_eq!(doc.to_bytes(), first.body());
        assert!(parsed.take(1, "/d", &first).is_none(), "taken out");
    }

    #[test]
    fn the_table_stays_within_its_budget_and_skips_large_documents() {
        let parsed = Parsed::default();
        let text = format!(r#"{{"s":"{}"}}"#, "x".repeat(60_000));
        let entries: Vec<_> = (0..40).map(|_| entry(&text)).collect();
        for (i, e) in entries.iter().enumerate() {
            parsed.keep(1, &format!("/d/{i}"), e, Document::parse(&e.body()).unwrap());
        }
        assert_eq!(parsed.table.len(), BUDGET_BYTES / text.len());
        assert_eq!(
            parsed.bytes.load(Ordering::Relaxed),
            parsed.table.len() * text.len()
        );
        let large = entry(&format!(r#"{{"s":"{}"}}"#, "x".repeat(MAX_SOURCE_BYTES)));
        parsed.keep(1, "/large", &large, Document::parse(&large.body()).unwrap());
        assert!(parsed.take(1, "/large", &large).is_none());
    }
}
