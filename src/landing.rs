//! Writes that were sent run to their end.
//!
//! Once patchgate has sent a write upstream, the upstream may apply it whatever happens
//! to the client that asked for it: so the write runs on a task of its own, holding the
//! resource's write lock, until the upstream answers or `server.write_timeout` passes,
//! and its real answer decides the cache. [`Landings`] counts those tasks, so that
//! shutdown can wait for them, and keeps the resources whose last write ended without
//! an answer ("uncertain"): their next read and write go to the upstream, whatever the
//! route's freshness, until an upstream answer confirms their state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashSet;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Landings {
    in_flight: AtomicUsize,
    landed: Notify,
    uncertain: DashSet<(u32, Box<str>)>,
    /// Mirrors `uncertain.len()`, so that reads skip the set while it is empty.
    uncertain_count: AtomicUsize,
}

/// Held by a sent write's task; counts it in flight until dropped.
pub(crate) struct Flying(Arc<Landings>);

impl Landings {
    pub(crate) fn fly(self: &Arc<Self>) -> Flying {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Flying(Arc::clone(self))
    }

    /// Sent writes that have not landed yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no sent write is in flight.
    pub(crate) async fn all_landed(&self) {
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            landed.await;
        }
    }

    /// The upstream's state of (route, path) is unknown: a write may or may not land.
    pub(crate) fn mark_uncertain(&self, route: u32, path: &str) {
        if self.uncertain.insert((route, path.into())) {
            self.uncertain_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// An upstream answer showed (route, path) as it is.
    pub(crate) fn confirm(&self, route: u32, path: &str) {
        if self.uncertain_count.load(Ordering::Acquire) == 0 {
            return;
        }
        if self.uncertain.remove(&(route, Box::from(path))).is_some() {
            self.uncertain_count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Resources whose state is unknown right now.
    pub(crate) fn uncertain(&self) -> usize {
        self.uncertain_count.load(Ordering::Acquire)
    }

    pub(crate) fn is_uncertain(&self, route: u32, path: &str) -> bool {
        self.uncertain_count.load(Ordering::Acquire) > 0 && self.uncertain.contains(&(route, Box::from(path)))
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.landed.notify_waiters();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn all_landed_waits_for_every_flying_write() {
        let landings = Arc::new(Landings::default());
        landings.all_landed().await;
        let first = landings.fly();
        let second = landings.fly();
        assert_eq!(landings.in_flight(), 2);
        let waiter = {
            let landings = Arc::clone(&landings);
            tokio::spawn(async move { landings.all_landed().await })
        };
        drop(first);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn an_uncertain_resource_stays_so_until_confirmed() {
        let landings = Landings::default();
        assert!(!landings.is_uncertain(1, "/a"));
        landings.mark_uncertain(1, "/a");
        landings.mark_uncertain(1, "/a");
        assert!(landings.is_uncertain(1, "/a"));
        assert!(!landings.is_uncertain(1, "/b") && !landings.is_uncertain(2, "/a"));
        landings.confirm(1, "/b");
        assert!(landings.is_uncertain(1, "/a"));
        landings.confirm(1, "/a");
        assert!(!landings.is_uncertain(1, "/a"));
        assert_eq!(landings.uncertain_count.load(Ordering::Acquire), 0);
    }
}
