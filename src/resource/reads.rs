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

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Uri, header, request};
use tokio::sync::watch;

use super::Handle;
use crate::cache::Entry;
use crate::headers::CONDITIONALS;
use crate::upstream::ConnInfo;

/// What decides the upstream request a read sends, before the revalidation's own
/// conditionals: the client's target, every header patchgate passes on or derives one
/// from, and the client's address. The request is a function of these and of the
/// resource's route (one per lane), so reads with equal signatures send the very same
/// request; comparing them needs no upstream request built per read.
#[derive(Debug)]
pub(crate) struct Signature {
    uri: Uri,
    headers: HeaderMap,
    peer: Option<(IpAddr, bool)>,
}

/// Headers a read's upstream request never carries as the client sent them.
fn replaced(name: &HeaderName) -> bool {
    CONDITIONALS.contains(name)
        || matches!(
            *name,
            header::RANGE | header::CONTENT_LENGTH | header::CONTENT_TYPE | header::ACCEPT_ENCODING
        )
}

fn peer(parts: &request::Parts) -> Option<(IpAddr, bool)> {
    parts
        .extensions
        .get::<ConnInfo>()
        .map(|info| (info.peer.ip(), info.tls))
}

impl Signature {
    pub(crate) fn of(parts: &request::Parts) -> Signature {
        let mut headers = HeaderMap::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            if !replaced(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Signature {
            uri: parts.uri.clone(),
            headers,
            peer: peer(parts),
        }
    }

    /// Whether `parts` has this signature, compared in place.
    fn matches(&self, parts: &request::Parts) -> bool {
        if self.uri != parts.uri || self.peer != peer(parts) {
            return false;
        }
        let mut names = 0;
        for name in parts.headers.keys().filter(|name| !replaced(name)) {
            names += 1;
            if !self.headers.get_all(name).iter().eq(parts.headers.get_all(name)) {
                return false;
            }
        }
        names == self.headers.keys_len()
    }
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
    Alone,
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
    /// A read of `parts` joins the exchanges of this resource.
    pub(crate) fn join_read(&self, parts: &request::Parts, join: Join) -> Role {
        let Ok(mut lanes) = self.reads.lanes.lock() else {
            return Role::Alone;
        };
        let lane = lanes.iter_mut().position(|l| l.signature.matches(parts));
        let (tx, mine) = watch::channel(None);
        let Some(i) = lane else {
            let signature = Arc::new(Signature::of(parts));
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
    use std::net::SocketAddr;

    use http::{HeaderValue, Request};

    use super::super::Resources;
    use super::*;
    use crate::etag::EntityTag;

    fn signature(user: &str) -> request::Parts {
        read(user, "/doc", "127.0.0.1:1000")
    }

    fn read(user: &str, target: &str, peer: &str) -> request::Parts {
        let (mut parts, ()) = Request::get(target)
            .header("authorization", user)
            .header("accept", "application/json")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(ConnInfo {
            peer: peer.parse::<SocketAddr>().unwrap(),
            tls: false,
        });
        parts
    }

    #[test]
    fn reads_share_a_signature_only_when_they_would_send_the_same_request() {
        let base = Signature::of(&signature("a"));
        assert!(base.matches(&signature("a")));
        assert!(!base.matches(&signature("b")), "another credential");
        assert!(
            !base.matches(&read("a", "/doc?x=1", "127.0.0.1:1000")),
            "another target"
        );
        assert!(
            !base.matches(&read("a", "/doc", "127.0.0.2:1000")),
            "another client address"
        );
        assert!(
            base.matches(&read("a", "/doc", "127.0.0.1:2000")),
            "the port is not forwarded"
        );
        let mut more = signature("a");
        more.headers.insert("x-extra", HeaderValue::from_static("1"));
        assert!(!base.matches(&more), "a header more");
        assert!(!Signature::of(&more).matches(&signature("a")), "a header less");
        let mut twice = signature("a");
        twice
            .headers
            .append("accept", HeaderValue::from_static("text/plain"));
        assert!(!base.matches(&twice), "another value of a header");
        let mut conditional = signature("a");
        conditional
            .headers
            .insert("if-none-match", HeaderValue::from_static("\"x\""));
        conditional
            .headers
            .insert("range", HeaderValue::from_static("bytes=0-1"));
        assert!(
            base.matches(&conditional),
            "patchgate's own conditionals and range replace these"
        );
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
        let Role::Lead(running) = resource.join_read(&signature("a"), Join::Next) else {
            panic!("the first read leads");
        };
        // Arrived while an exchange runs: the next one, led by the first to arrive.
        let Role::Lead(mut next) = resource.join_read(&signature("a"), Join::Next) else {
            panic!("leads the next exchange");
        };
        let Role::Follow(follower) = resource.join_read(&signature("a"), Join::Next) else {
            panic!("follows the next exchange");
        };
        assert!(
            matches!(resource.join_read(&signature("b"), Join::Next), Role::Lead(_)),
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
        let Role::Lead(leader) = resource.join_read(&signature("a"), Join::Running) else {
            panic!("the first read leads");
        };
        let Role::Follow(follower) = resource.join_read(&signature("a"), Join::Running) else {
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
        let Role::Lead(leader) = resource.join_read(&signature("a"), Join::Running) else {
            panic!("leads");
        };
        let Role::Follow(follower) = resource.join_read(&signature("a"), Join::Running) else {
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
        let Role::Lead(running) = resource.join_read(&signature("a"), Join::Next) else {
            panic!("leads");
        };
        let Role::Lead(next) = resource.join_read(&signature("a"), Join::Next) else {
            panic!("leads the next");
        };
        let Role::Follow(follower) = resource.join_read(&signature("a"), Join::Next) else {
            panic!("follows the next");
        };
        drop(next);
        assert!(Role::answer(follower).await.is_none());
        drop(running);
        assert_eq!(lanes(&resource), 0);
    }
}
