//! Group commit for PATCH. While one write to a resource holds its lock, unconditional
//! PATCHes that arrive for it wait in the resource's mailbox as well as in the lock's
//! queue. When a PATCH takes the lock, it applies its own patch, then claims the waiting
//! ones and applies each in turn to the same document, and writes the result upstream
//! once. Every claimed PATCH is answered with the confirmed document; one that cannot be
//! applied, or whose combined write the upstream refused, is sent back to write alone.
//!
//! The order is still one write at a time: a batch is the sequence "leader, then each
//! claimed patch in arrival order" applied and confirmed as one write, so no update is
//! lost and nothing unconfirmed is cached. A waiter that takes the lock before a leader
//! claimed it withdraws from the mailbox and writes alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use http::StatusCode;
use tokio::sync::oneshot;

use crate::cache::Entry;
use crate::patch::Patch;
use crate::rounds::Signature;

type Key = (u32, Box<str>);

/// What a waiting PATCH learns from the leader that claimed it.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Written and confirmed: the resource's new representation.
    Applied(Arc<Entry>),
    /// Not written: take the lock and write alone.
    Alone,
    /// The combined write failed in a way that may or may not have changed the upstream.
    Failed(StatusCode),
}

/// The mailboxes of the resources that have PATCHes waiting.
#[derive(Debug, Default)]
pub(crate) struct Mailboxes {
    table: DashMap<Key, Vec<Joiner>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Joiner {
    id: u64,
    pub patch: Arc<Patch>,
    /// The upstream write this PATCH would send, apart from its body: only a write that
    /// sends the very same request may carry it.
    signature: Signature,
    tx: oneshot::Sender<Verdict>,
}

/// A waiter's place in a mailbox; leaves it when dropped.
pub(crate) struct Ticket<'a> {
    boxes: &'a Mailboxes,
    key: Key,
    id: u64,
    pub rx: oneshot::Receiver<Verdict>,
}

impl Mailboxes {
    pub(crate) fn join(&self, route: u32, path: &str, patch: Arc<Patch>, signature: Signature) -> Ticket<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let key: Key = (route, path.into());
        self.table.entry(key.clone()).or_default().push(Joiner {
            id,
            patch,
            signature,
            tx,
        });
        Ticket {
            boxes: self,
            key,
            id,
            rx,
        }
    }

    /// Every PATCH waiting for (route, path) whose upstream write is `signature`, oldest
    /// first. The others stay for a writer that sends what they would send.
    pub(crate) fn take(&self, route: u32, path: &str, signature: &Signature) -> Vec<Joiner> {
        let mut taken = Vec::new();
        self.table.remove_if_mut(&(route, Box::from(path)), |_, joiners| {
            let (same, other) = std::mem::take(joiners)
                .into_iter()
                .partition(|j| j.signature == *signature);
            taken = same;
            *joiners = other;
            joiners.is_empty()
        });
        taken
    }

    /// Resources with PATCHes waiting right now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

impl Ticket<'_> {
    /// Leaves the mailbox. False when a leader has already claimed this waiter: its
    /// verdict is coming on `rx`.
    pub(crate) fn withdraw(&mut self) -> bool {
        let mut found = false;
        self.boxes.table.remove_if_mut(&self.key, |_, joiners| {
            if let Some(i) = joiners.iter().position(|j| j.id == self.id) {
                joiners.remove(i);
                found = true;
            }
            joiners.is_empty()
        });
        found
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// The waiters a leader claimed; each gets exactly one verdict, also when the leader's
/// future is dropped half way (its client went away).
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    joiners: Vec<Joiner>,
    /// Set once the combined write may have reached the upstream.
    sent: bool,
}

impl Claimed {
    pub(crate) fn push(&mut self, joiner: Joiner) {
        self.joiners.push(joiner);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.joiners.is_empty()
    }

    pub(crate) fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Answers every claimed waiter with a verdict made for each.
    pub(crate) fn settle(&mut self, verdict: impl Fn() -> Verdict) {
        for joiner in self.joiners.drain(..) {
            // A waiter whose client went away no longer listens.
            let _ = joiner.tx.send(verdict());
        }
    }
}

impl Joiner {
    /// Sends this waiter back to write alone.
    pub(crate) fn release(self) {
        let _ = self.tx.send(Verdict::Alone);
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        let sent = self.sent;
        self.settle(|| {
            if sent {
                Verdict::Failed(StatusCode::BAD_GATEWAY)
            } else {
                Verdict::Alone
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::Format;

    fn patch() -> Arc<Patch> {
        Arc::new(Patch::parse(Format::MergePatch, br#"{"a":1}"#, 10).unwrap())
    }

    fn signature(user: &str) -> Signature {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, user.parse().unwrap());
        Signature {
            uri: "http://up/a".parse().unwrap(),
            headers,
        }
    }

    fn join<'a>(boxes: &'a Mailboxes, path: &str) -> Ticket<'a> {
        boxes.join(1, path, patch(), signature("alice"))
    }

    #[test]
    fn a_leader_takes_the_waiters_in_arrival_order_and_the_mailbox_empties() {
        let boxes = Mailboxes::default();
        let mut first = join(&boxes, "/a");
        let second = join(&boxes, "/a");
        let other = join(&boxes, "/b");
        let taken = boxes.take(1, "/a", &signature("alice"));
        assert_eq!(
            taken.iter().map(|j| j.id).collect::<Vec<_>>(),
            [first.id, second.id]
        );
        assert!(!first.withdraw(), "a claimed waiter cannot withdraw");
        drop(other);
        assert_eq!(boxes.len(), 0);
    }

    #[test]
    fn a_writer_takes_only_the_waiters_that_would_send_its_request() {
        let boxes = Mailboxes::default();
        let alice = join(&boxes, "/a");
        let mut bob = boxes.join(1, "/a", patch(), signature("bob"));
        let taken = boxes.take(1, "/a", &signature("alice"));
        assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), [alice.id]);
        assert_eq!(boxes.len(), 1, "bob still waits");
        assert!(boxes.take(1, "/a", &signature("carol")).is_empty());
        assert!(bob.withdraw());
        assert_eq!(boxes.len(), 0);
    }

    #[test]
    fn a_waiter_that_withdraws_or_is_dropped_leaves_no_entry() {
        let boxes = Mailboxes::default();
        let mut first = join(&boxes, "/a");
        let second = join(&boxes, "/a");
        assert!(first.withdraw());
        assert_eq!(boxes.len(), 1);
        drop(second);
        assert_eq!(boxes.len(), 0);
        assert!(boxes.take(1, "/a", &signature("alice")).is_empty());
    }

    #[tokio::test]
    async fn a_dropped_batch_answers_every_waiter() {
        let boxes = Mailboxes::default();
        let before = join(&boxes, "/a");
        let after = join(&boxes, "/a");
        let mut joiners = boxes.take(1, "/a", &signature("alice")).into_iter();
        let mut unsent = Claimed::default();
        unsent.push(joiners.next().unwrap());
        drop(unsent);
        let mut sent = Claimed::default();
        sent.push(joiners.next().unwrap());
        sent.mark_sent();
        drop(sent);
        let (mut before, mut after) = (before, after);
        assert!(matches!((&mut before.rx).await, Ok(Verdict::Alone)));
        assert!(matches!(
            (&mut after.rx).await,
            Ok(Verdict::Failed(StatusCode::BAD_GATEWAY))
        ));
    }
}
