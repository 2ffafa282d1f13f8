//! Shared revalidations for reads on `freshness = "revalidate"` routes.
//!
//! A revalidated read must show the upstream as it is after the read arrived, so a read
//! may take its answer from an exchange only if that exchange started after it arrived
//! and sent exactly the request the read would have sent. Per resource, one exchange
//! runs at a time; reads that arrive meanwhile with the same upstream request wait for
//! the next one, which starts when the running one ends, and all of them get its answer.
//! A read whose upstream request differs (other credentials, other `Accept`, another
//! client address) makes its own exchange. So does every waiter when the exchange
//! yields nothing shareable: an error, a status other than 200/304, a body too large to
//! hold, or a response that sets a cookie.

use std::sync::Arc;

use dashmap::DashMap;
use http::{HeaderMap, Uri};
use tokio::sync::watch;

use crate::cache::{Entry, Key};

/// The upstream request a read sends, before the revalidation's own conditionals.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Signature {
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// `None` until the exchange yields a shareable representation.
type Answer = watch::Receiver<Option<Arc<Entry>>>;

/// The resources that have a revalidation running or waiting.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    lanes: DashMap<Key, Lane>,
}

#[derive(Debug, Default)]
struct Lane {
    /// The running exchange and what it sent; its channel closes when it ends.
    running: Option<(Arc<Signature>, Answer)>,
    /// The exchange that starts when the running one ends, and what it will send.
    next: Option<(Arc<Signature>, Answer)>,
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.running.is_none() && self.next.is_none()
    }
}

/// What a read does, from [`Rounds::join`].
pub(crate) enum Role<'a> {
    /// Make the exchange now, then publish what it yields.
    Lead(Round<'a>),
    /// Wait for the running exchange to end ([`Round::start`]), then lead.
    LeadNext(Round<'a>, Answer),
    /// Take the answer of an exchange that has not started yet.
    Follow(Answer),
    /// Make an exchange of its own.
    Alone(Signature),
}

/// A leader's place in its resource's lane; leaves it when dropped, which ends the
/// exchange for those waiting on it (with no answer if none was published).
pub(crate) struct Round<'a> {
    rounds: &'a Rounds,
    key: Key,
    signature: Arc<Signature>,
    tx: watch::Sender<Option<Arc<Entry>>>,
    mine: Answer,
}

impl Rounds {
    pub(crate) fn join(&self, key: &Key, signature: Signature) -> Role<'_> {
        // Most reads under load join a waiting exchange: decide those under the shard's
        // read lock, without a copy of the key.
        if let Some(lane) = self.lanes.get(key)
            && let Some((waiting, answer)) = &lane.next
        {
            return if **waiting == signature {
                Role::Follow(answer.clone())
            } else {
                Role::Alone(signature)
            };
        }
        let mut lane = self.lanes.entry(key.clone()).or_default();
        let running = match (&lane.next, &lane.running) {
            (Some((waiting, answer)), _) if **waiting == signature => {
                return Role::Follow(answer.clone());
            }
            (Some(_), _) => return Role::Alone(signature),
            // Waiting behind an exchange this read could not share gains nothing.
            (None, Some((sent, _))) if **sent != signature => return Role::Alone(signature),
            (None, running) => running.as_ref().map(|(_, answer)| answer.clone()),
        };
        let (tx, answer) = watch::channel(None);
        let signature = Arc::new(signature);
        let slot = Some((Arc::clone(&signature), answer.clone()));
        let round = Round {
            rounds: self,
            key: key.clone(),
            signature,
            tx,
            mine: answer,
        };
        match running {
            None => {
                lane.running = slot;
                Role::Lead(round)
            }
            Some(running) => {
                lane.next = slot;
                Role::LeadNext(round, running)
            }
        }
    }

    /// Resources with an exchange running or waiting (for tests).
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.lanes.len()
    }
}

impl Round<'_> {
    pub(crate) fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Waits for the running exchange to end, then becomes it: from here on, reads that
    /// arrive wait for the exchange after this one.
    pub(crate) async fn start(&mut self, mut running: Answer) {
        // Nothing but the end of the exchange matters here; `changed` fails once its
        // sender is gone.
        while running.changed().await.is_ok() {}
        if let Some(mut lane) = self.rounds.lanes.get_mut(&self.key)
            && lane
                .next
                .as_ref()
                .is_some_and(|(_, a)| a.same_channel(&self.mine))
        {
            lane.running = lane.next.take();
        }
    }

    /// Hands `entry` to the reads waiting on this exchange.
    pub(crate) fn publish(&self, entry: &Arc<Entry>) {
        self.tx.send_replace(Some(Arc::clone(entry)));
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if let Some(mut lane) = self.rounds.lanes.get_mut(&self.key) {
            let mine = &self.mine;
            if lane.running.as_ref().is_some_and(|(_, a)| a.same_channel(mine)) {
                lane.running = None;
            }
            // Cancelled before it started: the reads that joined make their own exchanges.
            if lane.next.as_ref().is_some_and(|(_, a)| a.same_channel(mine)) {
                lane.next = None;
            }
        }
        self.rounds.lanes.remove_if(&self.key, |_, lane| lane.is_idle());
    }
}

/// The representation an exchange that a read joined yielded, or `None` when the read
/// has to make its own.
pub(crate) async fn answer(mut answer: Answer) -> Option<Arc<Entry>> {
    answer
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|entry| entry.clone())
}

#[cfg(test)]
mod tests {

    use http::HeaderValue;

    use super::*;

    fn key() -> Key {
        Key {
            route: 0,
            path: "/doc".into(),
            query: None,
            requester: Default::default(),
        }
    }

    fn signature(user: &str) -> Signature {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(user).unwrap());
        Signature {
            uri: Uri::from_static("http://upstream/doc"),
            headers,
        }
    }

    fn entry(body: &'static str) -> Arc<Entry> {
        Arc::new(Entry::new(
            body.as_bytes(),
            &crate::etag::EntityTag::from_body(body.as_bytes()),
            Arc::default(),
        ))
    }

    #[tokio::test]
    async fn reads_that_arrive_during_an_exchange_share_the_next_one() {
        let rounds: &'static Rounds = Box::leak(Box::default());
        let Role::Lead(first) = rounds.join(&key(), signature("a")) else {
            panic!("an idle resource is led at once")
        };
        let Role::LeadNext(mut second, running) = rounds.join(&key(), signature("a")) else {
            panic!("a read during an exchange waits for the next")
        };
        let Role::Follow(third) = rounds.join(&key(), signature("a")) else {
            panic!("the same request joins the waiting exchange")
        };
        assert!(matches!(rounds.join(&key(), signature("b")), Role::Alone(_)));

        // The running exchange's answer is not the waiting reads' answer.
        first.publish(&entry("old"));
        let start = tokio::spawn(async move {
            second.start(running).await;
            second
        });
        tokio::task::yield_now().await;
        assert!(
            !start.is_finished(),
            "the next exchange starts only when the running one ends"
        );
        drop(first);
        let second = start.await.unwrap();

        // Started: a new arrival now waits for the exchange after it.
        let Role::LeadNext(fourth, _) = rounds.join(&key(), signature("a")) else {
            panic!("a read during the second exchange waits for a third")
        };
        second.publish(&entry("new"));
        drop(second);
        assert_eq!(answer(third).await.unwrap().body(), "new");
        drop(fourth);
        assert_eq!(rounds.busy(), 0);
    }

    #[tokio::test]
    async fn an_exchange_that_yields_nothing_sends_its_followers_alone() {
        let rounds = Rounds::default();
        let Role::Lead(first) = rounds.join(&key(), signature("a")) else {
            panic!()
        };
        let Role::LeadNext(mut second, running) = rounds.join(&key(), signature("a")) else {
            panic!()
        };
        let Role::Follow(follower) = rounds.join(&key(), signature("a")) else {
            panic!()
        };
        drop(first);
        second.start(running).await;
        drop(second);
        assert!(answer(follower).await.is_none());
        assert_eq!(rounds.busy(), 0);
    }

    #[tokio::test]
    async fn a_leader_cancelled_before_its_exchange_frees_the_lane() {
        let rounds = Rounds::default();
        let Role::Lead(first) = rounds.join(&key(), signature("a")) else {
            panic!()
        };
        let Role::LeadNext(second, _running) = rounds.join(&key(), signature("a")) else {
            panic!()
        };
        let Role::Follow(follower) = rounds.join(&key(), signature("a")) else {
            panic!()
        };
        drop(second);
        assert!(answer(follower).await.is_none());
        // With no exchange waiting, the next identical read waits for one of its own; a
        // different one goes at once.
        let again = rounds.join(&key(), signature("a"));
        assert!(matches!(again, Role::LeadNext(..)));
        assert!(matches!(rounds.join(&key(), signature("b")), Role::Alone(_)));
        drop(again);
        drop(first);
        assert_eq!(rounds.busy(), 0);
    }
}
