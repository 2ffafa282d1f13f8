//! A resource's write queue: one write at a time, and group commit for PATCH.
//!
//! Writes to one resource through this process run one at a time (SPEC "No lost
//! updates"): each waits for the resource's lock, an async mutex because a write holds it
//! across the upstream round trip. An unconditional PATCH that may be carried also waits
//! in the queue's mailbox; the holder of the lock, once it has applied its own patch,
//! takes the waiting PATCHes that would send the upstream the very same request as its
//! own write ([`WriteGuard::take_carried`]), applies each in arrival order and writes the
//! result once. Every carried PATCH gets exactly one [`Verdict`]; one that cannot be
//! applied, or whose combined write the upstream refused, is sent back to write alone.
//! The order is still one write at a time, so no update is lost. A waiter that gets the
//! lock before a holder took it leaves the mailbox and writes alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use super::Handle;
use crate::cache::Entry;
use crate::cluster::Lease;
use crate::patch::Patch;
use crate::upstream::Identity;

/// What a PATCH's upstream write sends apart from its body: the client's target and
/// everything of its request that goes into the head ([`crate::upstream::own_request`]).
/// Two PATCHes with equal signatures would send the very same request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WriteSignature {
    pub target: http::Uri,
    pub identity: Identity,
}

#[derive(Default)]
pub(super) struct Queue {
    lock: Arc<Mutex<()>>,
    /// PATCHes waiting to be carried, oldest first. A std mutex: never held across an
    /// `.await`.
    mailbox: std::sync::Mutex<Vec<Joiner>>,
    next_id: AtomicU64,
}

/// What a waiting PATCH learns from the writer that carried it.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Written and confirmed: the resource's new representation.
    Applied(Arc<Entry>),
    /// Not written: take the lock and write alone.
    Alone,
    /// The combined write failed in a way that may or may not have changed the upstream.
    Failed(StatusCode),
}

/// How a write gets its turn.
pub(crate) enum Turn {
    /// The resource's lock: this write goes next.
    Lock(WriteGuard),
    /// Another write carried this PATCH: what came of it.
    Carried(Verdict),
}

/// Held for the duration of one write, its upstream answer included; dropping it lets
/// the next writer in.
pub(crate) struct WriteGuard {
    _lock: OwnedMutexGuard<()>,
    resource: Handle,
    /// With `[cluster]`: the resource's lease across instances, taken after the lock.
    lease: Option<Lease>,
}

#[derive(Debug)]
pub(crate) struct Joiner {
    id: u64,
    pub patch: Arc<Patch>,
    /// The upstream write this PATCH would send, apart from its body: only a write that
    /// sends the very same request may carry it.
    signature: WriteSignature,
    tx: oneshot::Sender<Verdict>,
}

/// The PATCHes a writer carries; each gets exactly one verdict, also when the writer's
/// future is dropped half way.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    joiners: Vec<Joiner>,
    /// Set once the combined write may have reached the upstream.
    sent: bool,
}

impl Queue {
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.mailbox.lock().map(|m| m.is_empty()).unwrap_or(true)
    }

    fn join(&self, patch: Arc<Patch>, signature: WriteSignature) -> (u64, oneshot::Receiver<Verdict>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut mailbox) = self.mailbox.lock() {
            mailbox.push(Joiner {
                id,
                patch,
                signature,
                tx,
            });
        }
        (id, rx)
    }

    /// Leaves the mailbox. False when a writer already took this waiter: its verdict is
    /// on its way.
    fn withdraw(&self, id: u64) -> bool {
        let Ok(mut mailbox) = self.mailbox.lock() else {
            return false;
        };
        match mailbox.iter().position(|j| j.id == id) {
            Some(i) => {
                mailbox.remove(i);
                true
            }
            None => false,
        }
    }
}

impl Handle {
    /// The resource's lock if nobody holds it.
    pub(crate) fn try_lock(&self) -> Option<WriteGuard> {
        let guard = Arc::clone(&self.queue.lock).try_lock_owned().ok()?;
        Some(WriteGuard {
            _lock: guard,
            resource: self.clone(),
            lease: None,
        })
    }

    /// Waits for the resource's lock. Cancel-safe.
    pub(crate) async fn lock(&self) -> WriteGuard {
        WriteGuard {
            _lock: Arc::clone(&self.queue.lock).lock_owned().await,
            resource: self.clone(),
            lease: None,
        }
    }

    /// Waits for this write's turn: the lock, or, for a PATCH that may be carried
    /// (`carry`: the patch and the upstream request it would send), a writer that carried
    /// it. Cancel-safe: a dropped waiter leaves the mailbox.
    pub(crate) async fn turn(&self, carry: Option<(Arc<Patch>, WriteSignature)>) -> Turn {
        let Some((patch, signature)) = carry else {
            return Turn::Lock(self.lock().await);
        };
        let (id, mut rx) = self.queue.join(patch, signature);
        let mut ticket = Ticket {
            queue: &self.queue,
            id,
            open: true,
        };
        let verdict = tokio::select! {
            verdict = &mut rx => verdict,
            guard = self.lock() => {
                if ticket.withdraw() {
                    return Turn::Lock(guard);
                }
                // Taken just before the lock came: the verdict is on its way.
                drop(guard);
                (&mut rx).await
            }
        };
        ticket.open = false;
        match verdict {
            Ok(Verdict::Alone) => Turn::Lock(self.lock().await),
            Ok(verdict) => Turn::Carried(verdict),
            Err(_) => Turn::Carried(Verdict::Failed(StatusCode::BAD_GATEWAY)),
        }
    }
}

/// A waiter's place in the mailbox; leaves it when dropped.
struct Ticket<'a> {
    queue: &'a Queue,
    id: u64,
    open: bool,
}

impl Ticket<'_> {
    fn withdraw(&mut self) -> bool {
        self.open = false;
        self.queue.withdraw(self.id)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.open {
            self.queue.withdraw(self.id);
        }
    }
}

impl WriteGuard {
    /// Every waiting PATCH whose upstream write is `signature`, oldest first. The others
    /// stay for a writer that sends what they would send.
    pub(crate) fn take_carried(&self, signature: &WriteSignature) -> Vec<Joiner> {
        let Ok(mut mailbox) = self.resource.queue.mailbox.lock() else {
            return Vec::new();
        };
        let (same, other) = std::mem::take(&mut *mailbox)
            .into_iter()
            .partition(|j| j.signature == *signature);
        *mailbox = other;
        same
    }

    /// Whether PATCHes wait to be carried.
    pub(crate) fn has_waiting(&self) -> bool {
        self.resource
            .queue
            .mailbox
            .lock()
            .is_ok_and(|mailbox| !mailbox.is_empty())
    }

    pub(crate) fn has_lease(&self) -> bool {
        self.lease.is_some()
    }

    pub(crate) fn hold_lease(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    /// The lease, for the write that will release it.
    pub(crate) fn take_lease(&mut self) -> Option<Lease> {
        self.lease.take()
    }

    /// The resource this guard holds the lock of.
    pub(crate) fn resource(&self) -> &Handle {
        &self.resource
    }
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

    /// Answers every carried PATCH with a verdict made for each.
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
    use super::super::Resources;
    use super::*;
    use crate::patch::Format;
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;
    use std::time::Duration;

    fn patch() -> Arc<Patch> {
        Arc::new(Patch::parse(Format::MergePatch, br#"{"a":1}"#, 10).unwrap())
    }

    fn signature(user: &str) -> WriteSignature {
        let request = http::Request::builder()
            .uri("/a")
            .header(http::header::AUTHORIZATION, user)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        WriteSignature {
            target: parts.uri.clone(),
            identity: crate::upstream::identity(&parts),
        }
    }

    fn carry(user: &str) -> Option<(Arc<Patch>, WriteSignature)> {
        Some((patch(), signature(user)))
    }

    /// Polls `future` once.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
    }

    #[test]
    fn guards_can_be_held_across_tasks() {
        fn owned<T: Send + Sync + 'static>() {}
        owned::<WriteGuard>();
        owned::<Resources>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn hundred_writers_to_one_resource_run_one_at_a_time() {
        let resources = Arc::new(Resources::default());
        // A read-modify-write split by an await: without the lock, updates get lost.
        let counter = Arc::new(std::sync::Mutex::new(0u64));
        let inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (resources, counter, inside) =
                    (Arc::clone(&resources), Arc::clone(&counter), Arc::clone(&inside));
                tokio::spawn(async move {
                    let _guard = resources.get(7, "/people/1").lock().await;
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                    let seen = *counter.lock().unwrap();
                    tokio::task::yield_now().await;
                    *counter.lock().unwrap() = seen + 1;
                    inside.fetch_sub(1, Ordering::Relaxed);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*counter.lock().unwrap(), 100);
        assert_eq!(resources.len(), 0, "idle resources leave the registry");
    }

    #[tokio::test]
    async fn different_resources_do_not_block_each_other() {
        let resources = Resources::default();
        let _held = resources.get(1, "/a").lock().await;
        let other_path = tokio::time::timeout(Duration::from_secs(10), resources.get(1, "/b").lock()).await;
        let other_route = tokio::time::timeout(Duration::from_secs(10), resources.get(2, "/a").lock()).await;
        assert!(other_path.is_ok() && other_route.is_ok());
        assert_eq!(resources.len(), 3);
        drop((other_path, other_route));
        assert_eq!(resources.len(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_nothing_behind() {
        let resources = Resources::default();
        let held = resources.get(1, "/a").lock().await;
        let handle = resources.get(1, "/a");
        let mut waiter = Box::pin(handle.turn(carry("alice")));
        assert!(poll_once(&mut waiter).await.is_pending());
        assert!(!resources.get(1, "/a").queue.is_empty(), "in the mailbox");
        drop(waiter);
        drop(handle);
        assert!(resources.get(1, "/a").queue.is_empty());
        drop(held);
        assert_eq!(resources.len(), 0);
    }

    #[tokio::test]
    async fn a_writer_carries_only_the_waiters_that_would_send_its_request() {
        let resources = Resources::default();
        let resource = resources.get(1, "/a");
        let held = resource.lock().await;
        let mut alice = Box::pin(resource.turn(carry("alice")));
        let mut bob = Box::pin(resource.turn(carry("bob")));
        assert!(poll_once(&mut alice).await.is_pending());
        assert!(poll_once(&mut bob).await.is_pending());
        let taken = held.take_carried(&signature("alice"));
        assert_eq!(taken.len(), 1);
        assert!(held.take_carried(&signature("carol")).is_empty());
        let mut claimed = Claimed::default();
        claimed.push(taken.into_iter().next().unwrap());
        claimed.mark_sent();
        drop(claimed);
        assert!(matches!(
            alice.await,
            Turn::Carried(Verdict::Failed(StatusCode::BAD_GATEWAY))
        ));
        drop(held);
        assert!(matches!(bob.await, Turn::Lock(_)), "bob writes on his own");
    }

    #[tokio::test]
    async fn an_unsent_batch_sends_its_waiters_back_to_write_alone() {
        let resources = Resources::default();
        let resource = resources.get(1, "/a");
        let held = resource.lock().await;
        let mut waiter = Box::pin(resource.turn(carry("alice")));
        assert!(poll_once(&mut waiter).await.is_pending());
        let mut claimed = Claimed::default();
        for joiner in held.take_carried(&signature("alice")) {
            claimed.push(joiner);
        }
        drop(claimed);
        drop(held);
        assert!(matches!(waiter.await, Turn::Lock(_)));
    }
}
