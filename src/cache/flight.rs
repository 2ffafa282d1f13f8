//! Request coalescing: concurrent misses for one key make one upstream read.
//!
//! The first caller becomes the leader and holds a [`FlightGuard`]; the others get a
//! [`Follower`] that resolves when the guard is dropped, whether the leader stored a
//! response, failed, panicked or was cancelled. Followers then look in the cache again.
//! Invariant: the table holds a key only while its leader's guard is alive.

use std::sync::Arc;

use dashmap::{DashMap, Entry};
use tokio::sync::watch;

use super::Key;

/// Flights in progress. A closed watch channel is the "done" signal: unlike `Notify`,
/// a follower that starts waiting after the leader finished still sees it.
pub(super) type Table = DashMap<Key, watch::Receiver<()>>;

/// The outcome of [`super::Cache::join`].
#[derive(Debug)]
pub enum Flight {
    /// Fetch, store, then drop the guard.
    Leader(FlightGuard),
    /// Someone else is fetching: wait, then look in the cache again.
    Follower(Follower),
}

/// Held by the one caller fetching a key. Dropping it ends the flight.
#[derive(Debug)]
pub struct FlightGuard {
    table: Arc<Table>,
    key: Key,
    mine: watch::Receiver<()>,
    _done: watch::Sender<()>,
}

/// Waits for a leader.
#[derive(Debug)]
pub struct Follower(watch::Receiver<()>);

impl Follower {
    /// Resolves once the leader's guard is dropped.
    pub async fn wait(mut self) {
        // No value is ever sent, so this returns only when the sender is dropped.
        let _closed = self.0.changed().await;
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Leave the table before `_done` drops and wakes the followers, so that a follower
        // that misses again can lead the next flight.
        self.table
            .remove_if(&self.key, |_, rx| rx.same_channel(&self.mine));
    }
}

pub(super) fn join(table: &Arc<Table>, key: &Key) -> Flight {
    if let Some(rx) = table.get(key) {
        return Flight::Follower(Follower(rx.clone()));
    }
    match table.entry(key.clone()) {
        Entry::Occupied(flight) => Flight::Follower(Follower(flight.get().clone())),
        Entry::Vacant(slot) => {
            let (done, mine) = watch::channel(());
            slot.insert(mine.clone());
            Flight::Leader(FlightGuard {
                table: Arc::clone(table),
                key: key.clone(),
                mine,
                _done: done,
            })
        }
    }
}
