//! Writes that were sent run to their end.
//!
//! Once patchgate has sent a write upstream, the upstream may apply it whatever happens
//! to the client that asked for it: so the write is never cancelled (it moves to a task
//! of its own if its request goes away) and holds the resource's write lock until the
//! upstream answers or `server.write_timeout` passes; its real answer decides the cache.
//! [`Landings`] counts the writes in flight, so that shutdown can wait for them. (A write that ends without an answer marks its resource
//! uncertain: see [`crate::resource`].)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Landings {
    in_flight: AtomicUsize,
    landed: Notify,
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
}
