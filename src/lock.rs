//! Per-resource write locks: writes to one (route, upstream path) through this process
//! run one at a time (SPEC "No lost updates"), writes to different resources in parallel.
//!
//! The mutexes are tokio's because a write holds its lock across the upstream round
//! trip. Invariant: the table holds an entry only while someone holds or waits for that
//! resource's lock, so it stays as small as the number of writes in progress.

use std::sync::{Arc, Weak};

use dashmap::{DashMap, Entry};
use tokio::sync::{Mutex, OwnedMutexGuard};

type Table = DashMap<(u32, Box<str>), Weak<Mutex<Cleanup>>>;

/// Serializes writes to one resource (route, upstream path) within this process.
#[derive(Debug, Default)]
pub struct Locks {
    table: Arc<Table>,
}

/// Held for the duration of one write; dropping it lets the next writer in.
#[derive(Debug)]
pub struct WriteGuard {
    _guard: OwnedMutexGuard<Cleanup>,
}

/// Lives inside the mutex, so it is dropped exactly when the last holder or waiter lets
/// go of the mutex — including waiters whose future was cancelled — and then removes
/// the table entry.
#[derive(Debug)]
struct Cleanup {
    table: Weak<Table>,
    key: (u32, Box<str>),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(table) = self.table.upgrade() else {
            return;
        };
        // Under the shard lock: a dead link can only be ours; a live one belongs to a
        // newer mutex created after ours died, which must stay.
        table.remove_if(&self.key, |_, link| link.strong_count() == 0);
    }
}

impl Locks {
    pub fn new() -> Locks {
        Locks::default()
    }

    /// Waits for the write lock of (route, path). Cancel-safe: a dropped future leaves
    /// no table entry behind.
    pub async fn lock(&self, route: u32, path: &str) -> WriteGuard {
        let mutex = self.mutex((route, path.into()));
        WriteGuard {
            _guard: mutex.lock_owned().await,
        }
    }

    /// Resources locked or waited for right now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The resource's mutex, shared with every current holder and waiter. Taken and
    /// created under the shard lock, so `Cleanup` cannot remove an entry in between.
    fn mutex(&self, key: (u32, Box<str>)) -> Arc<Mutex<Cleanup>> {
        let fresh = |key: &(u32, Box<str>)| {
            Arc::new(Mutex::new(Cleanup {
                table: Arc::downgrade(&self.table),
                key: key.clone(),
            }))
        };
        match self.table.entry(key) {
            Entry::Occupied(mut held) => match held.get().upgrade() {
                Some(mutex) => mutex,
                None => {
                    let mutex = fresh(held.key());
                    held.insert(Arc::downgrade(&mutex));
                    mutex
                }
            },
            Entry::Vacant(vacant) => {
                let mutex = fresh(vacant.key());
                vacant.insert(Arc::downgrade(&mutex));
                mutex
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::task::Poll;
    use std::time::Duration;

    #[test]
    fn locks_and_guards_can_be_held_across_tasks() {
        fn shared<T: Send + Sync>(_: &T) {}
        let locks = Locks::new();
        shared(&locks);
        shared(&locks.lock(1, "/a"));
        fn guard<T: Send + Sync + 'static>() {}
        guard::<WriteGuard>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn hundred_writers_to_one_resource_run_one_at_a_time() {
        let locks = Arc::new(Locks::new());
        // A read-modify-write split by an await: without the lock, updates get lost.
        let counter = Arc::new(std::sync::Mutex::new(0u64));
        let inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (locks, counter, inside) =
                    (Arc::clone(&locks), Arc::clone(&counter), Arc::clone(&inside));
                tokio::spawn(async move {
                    let _guard = locks.lock(7, "/people/1").await;
                    assert_eq!(inside.fetch_add(1, Relaxed), 0);
                    let seen = *counter.lock().unwrap();
                    tokio::task::yield_now().await;
                    *counter.lock().unwrap() = seen + 1;
                    inside.fetch_sub(1, Relaxed);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*counter.lock().unwrap(), 100);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn different_resources_do_not_block_each_other() {
        let locks = Locks::new();
        let _held = locks.lock(1, "/a").await;
        let other_path = tokio::time::timeout(Duration::from_secs(10), locks.lock(1, "/b")).await;
        let other_route = tokio::time::timeout(Duration::from_secs(10), locks.lock(2, "/a")).await;
        assert!(other_path.is_ok() && other_route.is_ok());
        assert_eq!(locks.len(), 3);
        drop((other_path, other_route));
        assert_eq!(locks.len(), 1);
    }

    #[tokio::test]
    async fn same_resource_waits_for_the_holder() {
        let locks = Arc::new(Locks::new());
        let held = locks.lock(1, "/a").await;
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move {
                let _guard = locks.lock(1, "/a").await;
            })
        };
        // Current-thread runtime: yielding lets the waiter run up to the lock.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        assert_eq!(locks.len(), 1);
        drop(held);
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_no_entry() {
        let locks = Locks::new();
        let held = locks.lock(1, "/a").await;
        let waiter = locks.lock(1, "/a");
        tokio::pin!(waiter);
        let polled = std::future::poll_fn(|cx| Poll::Ready(waiter.as_mut().poll(cx).is_pending())).await;
        assert!(polled);
        // The holder leaves while the waiter still holds the mutex; then the waiter is
        // cancelled without ever acquiring it.
        drop(held);
        assert_eq!(locks.len(), 1);
        waiter.set(locks.lock(2, "/other"));
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn relocking_after_release_works_and_cleans_up() {
        let locks = Locks::new();
        for _ in 0..3 {
            let guard = locks.lock(1, "/a").await;
            assert_eq!(locks.len(), 1);
            drop(guard);
            assert_eq!(locks.len(), 0);
        }
    }
}
