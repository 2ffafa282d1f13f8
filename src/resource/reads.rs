//! A resource's read coalescer: which reads share one upstream exchange.
//!
//! Only reads that would send the upstream the very same request ([`Signature`]: target
//! and every header, so the same requester, the same `Accept`, the same client address)
//! ever share, and only a 200 that sets no cookie is handed from one to another. Per
//! signature one exchange runs at a time; which one a read may take is the join rule,
//! decided by the route's freshness:
//!
//! - [`Join::Running`] (an `exclusive` or duration route, on a miss): the running
//!   exchange will do, since such a route may serve what was cached just before;
//! - [`Join::Next`] (a `revalidate` route): only an exchange that starts after the read
//!   arrived shows the upstream as it is then; a read that arrives while one runs waits
//!   for the next, which starts when the running one ends and answers all who waited.
//!
//! A read whose exchange yields nothing shareable (an error, another status, a body too
//! large to hold, a cookie) makes its own.

use std::sync::Arc;

use http::{HeaderMap, Uri};
use tokio::sync::watch;

use super::Handle;
use crate::cache::Entry;

/// The upstream request a read sends, before the revalidation's own conditionals.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Signature {
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// Which exchange a read may take its answer from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Join {
    /// The one running now, or a new one.
    Running,
    /// Only one that starts after the read arrived.
    Next,
}

/// `None` until the exchange yields a shareable representation.
type Answer = watch::Receiver<Option<Arc<Entry>>>;

#[derive(Default)]
pub(super) struct Reads {
    /// One lane per signature with an exchange running or waiting; a handful at most.
    /// A std mutex: never held across an `.await`.
    lanes: std::sync::Mutex<Vec<Lane>>,
}

struct Lane {
    signature: Arc<Signature>,
    /// The running exchange; its channel closes when it ends.
    running: Option<Answer>,
    /// The exchange that starts when the running one ends.
    next: Option<Answer>,
}

/// What a read does, from [`Handle::join_read`].
pub(crate) enum Role {
    /// Make the exchange now ([`Round::start`] first), then publish what it yields.
    Lead(Round),
    /// Take the answer of another exchange ([`Role::answer`]).
    Follow(Answer),
    /// Make an exchange of its own.
    Alone(Signature),
}

/// A leader's place in its lane; leaves it when dropped, which ends the exchange for
/// those waiting on it (with no answer if none was published).
pub(crate) struct Round {
    resource: Handle,
    signature: Arc<Signature>,
    tx: watch::Sender<Option<Arc<Entry>>>,
    mine: Answer,
    /// The exchange to wait for before this one starts.
    after: Option<Answer>,
}

impl Handle {
    /// A read that would send `signature` joins the exchanges of this resource.
    pub(crate) fn join_read(&self, signature: Signature, join: Join) -> Role {
        let Ok(mut lanes) = self.reads.lanes.lock() else {
            return Role::Alone(signature);
        };
        let lane = lanes.iter_mut().position(|l| *l.signature == signature);
        let (tx, mine) = watch::channel(None);
        let Some(i) = lane else {
            let signature = Arc::new(signature);
            lanes.push(Lane {
                signature: Arc::clone(&signature),
                running: Some(mine.clone()),
                next: None,
            });
            return Role::Lead(self.round(signature, tx, mine, None));
        };
        let lane = &mut lanes[i];
        match (join, &lane.running, &lane.next) {
            (Join::Running, Some(running), _) => Role::Follow(running.clone()),
            (_, _, Some(next)) => Role::Follow(next.clone()),
            (_, running, None) => {
                let after = running.clone();
                if after.is_some() {
                    lane.next = Some(mine.clone());
                } else {
                    lane.running = Some(mine.clone());
                }
                let signature = Arc::clone(&lane.signature);
                Role::Lead(self.round(signature, tx, mine, after))
            }
        }
    }

    fn round(
        &self,
        signature: Arc<Signature>,
        tx: watch::Sender<Option<Arc<Entry>>>,
        mine: Answer,
        after: Option<Answer>,
    ) -> Round {
        Round {
            resource: self.clone(),
            signature,
            tx,
            mine,
            after,
        }
    }
}

impl Role {
    /// The representation the joined exchange yielded, or `None` when the read has to
    /// make its own.
    pub(crate) async fn answer(mut answer: Answer) -> Option<Arc<Entry>> {
        answer
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|entry| entry.clone())
    }
}

impl Round {
    pub(crate) fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Waits for the running exchange to end, then becomes it: from here on, reads that
    /// arrive wait for the exchange after this one.
    pub(crate) async fn start(&mut self) {
        let Some(mut running) = self.after.take() else {
            return;
        };
        // Only the end of the exchange matters; `changed` fails once its sender is gone.
        while running.changed().await.is_ok() {}
        if let Ok(mut lanes) = self.resource.reads.lanes.lock()
            && let Some(lane) = lanes
                .iter_mut()
                .find(|l| Arc::ptr_eq(&l.signature, &self.signature))
            && lane.next.as_ref().is_some_and(|a| a.same_channel(&self.mine))
        {
            lane.running = lane.next.take();
        }
    }

    /// Hands `entry` to the reads waiting on this exchange.
    pub(crate) fn publish(&self, entry: &Arc<Entry>) {
        self.tx.send_replace(Some(Arc::clone(entry)));
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        let Ok(mut lanes) = self.resource.reads.lanes.lock() else {
            return;
        };
        let mine = &self.mine;
        if let Some(lane) = lanes
            .iter_mut()
            .find(|l| Arc::ptr_eq(&l.signature, &self.signature))
        {
            if lane.running.as_ref().is_some_and(|a| a.same_channel(mine)) {
                lane.running = None;
            }
            // Cancelled before it started: the reads that joined make their own exchanges.
            if lane.next.as_ref().is_some_and(|a| a.same_channel(mine)) {
                lane.next = None;
            }
        }
        lanes.retain(|l| l.running.is_some() || l.next.is_some());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use http::HeaderValue;

    use super::super::Resources;
    use super::*;
    use crate::etag::EntityTag;

    fn signature(user: &str) -> Signature {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(user).unwrap());
        Signature {
            uri: Uri::from_static("http://upstream/doc"),
            headers,
        }
    }

    fn entry(body: &str) -> Arc<Entry> {
        Arc::new(Entry::new(
            body.as_bytes(),
            &EntityTag::from_body(body.as_bytes()),
            Arc::default(),
        ))
    }

    fn lanes(resource: &Handle) -> usize {
        resource.reads.lanes.lock().unwrap().len()
    }

    #[tokio::test]
    async fn revalidating_reads_wait_for_the_next_exchange_and_share_it() {
        let resources = Resources::default();
        let resource = resources.get(1, "/doc");
        let Role::Lead(running) = resource.join_read(signature("a"), Join::Next) else {
            panic!("the first read leads");
        };
        // Arrived while an exchange runs: the next one, led by the first to arrive.
        let Role::Lead(mut next) = resource.join_read(signature("a"), Join::Next) else {
            panic!("leads the next exchange");
        };
        let Role::Follow(follower) = resource.join_read(signature("a"), Join::Next) else {
            panic!("follows the next exchange");
        };
        assert!(
            matches!(resource.join_read(signature("b"), Join::Next), Role::Lead(_)),
            "another requester"
        );
        running.publish(&entry("old"));
        drop(running);
        next.start().await;
        next.publish(&entry("new"));
        let got = Role::answer(follower).await.unwrap();
        assert_eq!(got.body(), "new");
        drop(next);
        assert_eq!(lanes(&resource), 0);
    }

    #[tokio::test]
    async fn a_miss_joins_the_running_exchange() {
        let resources = Resources::default();
        let resource = resources.get(1, "/doc");
        let Role::Lead(leader) = resource.join_read(signature("a"), Join::Running) else {
            panic!("the first read leads");
        };
        let Role::Follow(follower) = resource.join_read(signature("a"), Join::Running) else {
            panic!("joins the running exchange");
        };
        leader.publish(&entry("body"));
        drop(leader);
        assert_eq!(Role::answer(follower).await.unwrap().body(), "body");
    }

    #[tokio::test]
    async fn an_exchange_that_yields_nothing_sends_its_followers_on_their_own() {
        let resources = Resources::default();
        let resource = resources.get(1, "/doc");
        let Role::Lead(leader) = resource.join_read(signature("a"), Join::Running) else {
            panic!("leads");
        };
        let Role::Follow(follower) = resource.join_read(signature("a"), Join::Running) else {
            panic!("follows");
        };
        drop(leader);
        assert!(Role::answer(follower).await.is_none());
        drop(resource);
        assert_eq!(resources.len(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn a_cancelled_next_leader_sends_its_followers_on_their_own() {
        let resources = Resources::default();
        let resource = resources.get(1, "/doc");
        let Role::Lead(running) = resource.join_read(signature("a"), Join::Next) else {
            panic!("leads");
        };
        let Role::Lead(next) = resource.join_read(signature("a"), Join::Next) else {
            panic!("leads the next");
        };
        let Role::Follow(follower) = resource.join_read(signature("a"), Join::Next) else {
            panic!("follows the next");
        };
        drop(next);
        assert!(Role::answer(follower).await.is_none());
        drop(running);
        assert_eq!(lanes(&resource), 0);
    }
}
