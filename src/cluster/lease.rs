//! A resource's lease in Redis: who may write it, across instances.
//!
//! `SET key token NX PX lease` takes it; a script that compares the token extends it
//! (renewal while held, and the proof just before the upstream write is sent); a script
//! that compares the token deletes it and publishes the notice other instances act on.
//! Only the holder of the token can extend or delete it.
//!
//! A Redis that loses its keys (restarted without persistence) loses the leases of
//! writes that may still be under way. Every instance remembers the random value of the
//! `epoch` key it last saw; one that finds it gone or changed when it (re)subscribes sets
//! `quiet` for a whole `cluster.lease`, during which no lease is given: every write
//! proven before the loss has ended by then.

use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::message::Message;
use super::{Acks, Cluster, Refusal, random_token};
use crate::layer::Shared;
use crate::resource::Handle;

/// Takes the lease when free, or when this token already holds it (the answer to an
/// earlier attempt was lost): 1, else 0.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
         local holder = redis.call('GET', KEYS[1]) \
         if holder == ARGV[1] then \
           redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
           return 1 \
         end \
         if holder then return 0 end \
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
         return 1",
    )
});

/// Reads the epoch, making one if there is none; sets `quiet` when the epoch this
/// instance knew (`ARGV[1]`, empty when none) is gone or changed. Returns the epoch.
static EPOCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local epoch = redis.call('GET', KEYS[1]) \
         if not epoch then \
           epoch = ARGV[2] \
           redis.call('SET', KEYS[1], epoch) \
         end \
         if ARGV[1] ~= '' and ARGV[1] ~= epoch then \
           redis.call('SET', KEYS[2], '1', 'PX', ARGV[3], 'NX') \
         end \
         return epoch",
    )
});

/// Extends the lease when the token still holds it: 1, else 0.
static PROVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
         end \
         return 0",
    )
});

/// Deletes the lease when the token still holds it, and publishes the notice (a write
/// is published even by a holder that lost its lease: other caches must drop it).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local held = redis.call('GET', KEYS[1]) == ARGV[1] \
         if held then redis.call('DEL', KEYS[1]) end \
         local receivers = redis.call(ARGV[4], ARGV[2], ARGV[3]) \
         if held then return {1, receivers} end \
         return {0, receivers}",
    )
});

/// A held lease. Released by [`Lease::release`]; dropped unreleased (a write refused
/// before it was sent), it is released in the background with a plain notice.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    key: String,
    token: String,
    route: String,
    path: String,
    /// When the request that took it was sent: by Redis's clock it holds for `lease`
    /// from a moment after this.
    taken_at: Instant,
    /// Set by the renewal when it found the lease gone.
    lost: Arc<AtomicBool>,
    renewal: tokio::task::JoinHandle<()>,
    open: bool,
}

impl Cluster {
    /// Takes the lease of (route, path) for this instance, waiting while another holds
    /// it: woken by its release notice, else every `lease_poll`, for at most `wait`.
    pub(crate) async fn lease(
        &self,
        shared: &Arc<Shared>,
        resource: &Handle,
        route: &str,
        path: &str,
        wait: Duration,
    ) -> Result<Lease, Refusal> {
        if !self.is_up_soon().await {
            return Err(Refusal::Unreachable);
        }
        let key = self.key("lease", route, path);
        let quiet = self.global_key("quiet");
        let token = random_token();
        let ttl = millis(self.settings.lease).to_string();
        let deadline = Instant::now() + wait;
        let mut waited = false;
        loop {
            // Listen before asking, so that a release between the two is not missed.
            let released = resource.lease_released();
            tokio::pin!(released);
            released.as_mut().enable();
            let taken_at = Instant::now();
            let taken: i64 = self
                .eval(&ACQUIRE, &[&key, &quiet], &[&token, &ttl])
                .await
                .map_err(|()| Refusal::Unreachable)?;
            if taken == 1 {
                let lost = Arc::new(AtomicBool::new(false));
                let renewal = tokio::spawn(renew(
                    Arc::clone(shared),
                    key.clone(),
                    token.clone(),
                    Arc::clone(&lost),
                ));
                return Ok(Lease {
                    shared: Arc::clone(shared),
                    key,
                    token,
                    route: route.to_owned(),
                    path: path.to_owned(),
                    taken_at,
                    lost,
                    renewal,
                    open: true,
                });
            }
            if !waited {
                waited = true;
                self.counters.lease_waits.fetch_add(1, Relaxed);
            }
            if Instant::now() >= deadline {
                return Err(Refusal::LeaseBusy);
            }
            // Woken at the deadline at the latest, for a last try.
            let wake = (Instant::now() + self.settings.lease_poll).min(deadline);
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            if !self.is_up() {
                return Err(Refusal::Unreachable);
            }
        }
    }
}

impl Lease {
    /// Shows that this lease holds for longer than the write about to be sent can take
    /// (`write_timeout`, the write's own generation's): by the time it was taken, when that leaves room enough
    /// (the usual case: a write sent right after its lease was taken), else by asking
    /// Redis, which pushes its expiry a whole `cluster.lease` ahead.
    pub(crate) async fn prove(&self, write_timeout: Duration) -> Result<(), crate::problem::Error> {
        let Some(cluster) = &self.shared.cluster else {
            return Ok(());
        };
        let needed = write_timeout + cluster.settings.timeout;
        if !self.lost.load(Relaxed) && self.taken_at.elapsed() + needed < cluster.settings.lease {
            return Ok(());
        }
        match extend(cluster, &self.key, &self.token).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                cluster.counters.lease_losses.fetch_add(1, Relaxed);
                tracing::warn!(key = %self.key, "lease lost before the write was sent: not sent");
                Err(cluster.refused(Refusal::LeaseLost))
            }
            Err(()) => Err(cluster.refused(Refusal::Unreachable)),
        }
    }

    /// Releases the lease after a write was sent (the upstream may have changed): every
    /// instance drops its copy. With `acked` (a route whose reads may be answered from
    /// the cache), returns once each instance subscribed has acked that, or could no
    /// longer answer from its cache anyway (`cluster.timeout` later): only then may the
    /// write be acknowledged.
    pub(crate) async fn release_written(mut self, acked: bool) {
        self.open = false;
        self.renewal.abort();
        let (shared, key, token) = (&self.shared, &self.key, &self.token);
        release(shared, key, token, &self.route, &self.path, Some(acked)).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.renewal.abort();
        let (shared, key, token) = (Arc::clone(&self.shared), self.key.clone(), self.token.clone());
        let (route, path) = (self.route.clone(), self.path.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&shared, &key, &token, &route, &path, None).await });
        }
    }
}

/// Releases the lease, publishing a write (`Some(acked)`) or a plain release (`None`).
async fn release(shared: &Shared, key: &str, token: &str, route: &str, path: &str, written: Option<bool>) {
    let Some(cluster) = &shared.cluster else { return };
    let acked = written == Some(true);
    let seq = cluster.next_seq.fetch_add(1, Relaxed);
    let notice = match written {
        Some(acked) => Message::write(&cluster.instance, seq, acked, route, path),
        None => Message::release(&cluster.instance, route, path),
    };
    // Listening before publishing: an ack may come back before the script's answer.
    let acks = Arc::new(Acks::default());
    if acked {
        cluster.acks.insert(seq, Arc::clone(&acks));
    }
    let released: Result<(i64, i64), ()> = cluster
        .eval(
            &RELEASE,
            &[key],
            &[token, &cluster.channel(), &notice, cluster.publish_command()],
        )
        .await;
    match released {
        Ok((held, receivers)) => {
            if written.is_some() {
                cluster.counters.invalidations_sent.fetch_add(1, Relaxed);
            }
            if held == 0 {
                cluster.counters.lease_losses.fetch_add(1, Relaxed);
                tracing::warn!(%key, "lease had expired by the time it was released");
            }
            if acked {
                let deadline = Instant::now() + cluster.settings.timeout;
                let receivers = u64::try_from(receivers).unwrap_or(0);
                loop {
                    let arrived = acks.arrived.notified();
                    tokio::pin!(arrived);
                    arrived.as_mut().enable();
                    if acks.count.load(Acquire) >= receivers {
                        break;
                    }
                    if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                        tracing::debug!(%key, "an instance did not ack a write in time");
                        break;
                    }
                }
            }
        }
        Err(()) => {
            if written.is_some() {
                tracing::error!(
                    %key,
                    "a write's notice could not be published: other instances drop their copies \
                     only when they reconnect to Redis"
                );
            }
        }
    }
    if acked {
        cluster.acks.remove(&seq);
    }
}

/// Renews the lease every third of its lifetime until aborted or lost.
async fn renew(shared: Arc<Shared>, key: String, token: String, lost: Arc<AtomicBool>) {
    let Some(cluster) = &shared.cluster else { return };
    let every = cluster.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match extend(cluster, &key, &token).await {
            Ok(true) | Err(()) => {}
            Ok(false) => {
                lost.store(true, Relaxed);
                cluster.counters.lease_losses.fetch_add(1, Relaxed);
                tracing::warn!(%key, "lease lost while held");
                return;
            }
        }
    }
}

async fn extend(cluster: &Cluster, key: &str, token: &str) -> Result<bool, ()> {
    let ttl = millis(cluster.settings.lease).to_string();
    let extended: i64 = cluster.eval(&PROVE, &[key], &[token, &ttl]).await?;
    Ok(extended == 1)
}

impl Cluster {
    /// Checks Redis's epoch as a subscription starts: a changed one means leases were
    /// lost, and `quiet` holds new ones back until the writes they covered are over.
    pub(super) async fn check_epoch(&self) -> Result<(), ()> {
        let known = self.epoch.lock().ok().and_then(|e| e.clone()).unwrap_or_default();
        let ttl = millis(self.settings.lease).to_string();
        let keys = [self.global_key("epoch"), self.global_key("quiet")];
        let epoch: String = self
            .eval(&EPOCH, &[&keys[0], &keys[1]], &[&known, &random_token(), &ttl])
            .await?;
        if !known.is_empty() && known != epoch {
            tracing::warn!(
                "redis lost its keys (restarted without persistence?): no lease is given for \
                 cluster.lease, until every write that may be under way has ended"
            );
        }
        if let Ok(mut e) = self.epoch.lock() {
            *e = Some(epoch);
        }
        Ok(())
    }

    /// Runs a script. Every script here may run twice: a command whose connection
    /// dropped is sent once more, on the connection the manager makes anew.
    pub(super) async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, ()> {
        let mut commands = self.commands_even_if_down().map_err(|_| ())?;
        let mut retried = false;
        loop {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            match invocation.invoke_async(&mut commands).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    self.failed(&e);
                    if retried || !(e.is_connection_dropped() || e.is_io_error()) {
                        return Err(());
                    }
                    retried = true;
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
