//! The subscriber: one connection per instance that receives the other instances'
//! notices (applying and acking them), keeps the coherence window open with `PING`s, and
//! answers the writers' barrier (see the module above).
//!
//! Invariant: a `PONG` counts (for a barrier, or the window from its `PING`'s sending)
//! only once every notice received before it has been applied. The cache is emptied whenever a subscription (re)starts, because
//! notices may have been missed while there was none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::Msg;
use tokio::sync::{mpsc, oneshot};

use super::message::Message;
use super::{Source, describe};
use crate::layer::Shared;

type Waiters = Vec<oneshot::Sender<bool>>;
/// A `PING` in flight: when it was sent, and its answer.
type Ping = (
    std::time::Instant,
    Pin<Box<dyn Future<Output = Result<(), String>> + Send>>,
);

/// Why a subscription ended.
enum End {
    /// The layer is gone: stop.
    Stop,
    /// Redis went away: retry.
    Lost(String),
}

pub(super) async fn run(
    shared: Weak<Shared>,
    source: std::sync::Arc<Source>,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let cause = match subscription(&shared, &source, &mut requests).await {
            End::Stop => return,
            End::Lost(cause) => cause,
        };
        let Some(strong) = shared.upgrade() else { return };
        let Some(cluster) = &strong.cluster else { return };
        if cluster.is_up() {
            backoff = Duration::from_millis(50);
        }
        // Once per outage and per new reason (a wrong CA at start is said, not only shown).
        if cluster.is_up() || cluster.cause() != cause {
            tracing::warn!(%cause, "redis unreachable: writes refused, reads go upstream");
        }
        cluster.counters.redis_errors.fetch_add(1, Relaxed);
        cluster.set_up(false, &cause);
        let limit = cluster.settings.timeout;
        drop(strong);
        // Down: every barrier asked for fails until the next subscription.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                request = requests.recv() => match request {
                    Some(tx) => { let _ = tx.send(false); }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(limit);
    }
}

/// One subscription, from connecting to losing it.
async fn subscription(
    shared: &Weak<Shared>,
    source: &Source,
    requests: &mut mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
) -> End {
    let Some(strong) = shared.upgrade() else {
        return End::Stop;
    };
    let Some(cluster) = &strong.cluster else {
        return End::Stop;
    };
    let limit = cluster.settings.timeout;
    let channel = cluster.channel();
    // For Sentinel, the primary now: it may have changed since the last subscription.
    let client = match tokio::time::timeout(limit * 2, source.resolve()).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return End::Lost(describe(&e)),
        Err(_) => return End::Lost("timed out".to_owned()),
    };
    if let Err(e) = cluster.connect_commands(client.clone()) {
        return End::Lost(describe(&e));
    }
    let pubsub = match tokio::time::timeout(limit, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return End::Lost(describe(&e)),
        Err(_) => return End::Lost("timed out".to_owned()),
    };
    let (mut sink, mut stream) = pubsub.split();
    match tokio::time::timeout(limit, sink.subscribe(&channel)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return End::Lost(describe(&e)),
        Err(_) => return End::Lost("timed out".to_owned()),
    }
    if cluster.check_epoch().await.is_err() {
        return End::Lost("epoch check failed".to_owned());
    }
    // Notices may have been missed while unsubscribed: nothing cached can be trusted.
    strong.cache.invalidate_all();
    if !cluster.is_up() {
        tracing::info!("redis reachable: cluster coordination on");
    }
    cluster.set_up(true, "");
    drop(strong);

    let mut waiting: Waiters = Vec::new();
    let mut in_flight: Option<(Waiters, Ping)> = None;
    // A quiet connection is still checked (so that /healthz notices a dead one), and
    // often enough that reads stay coherent without waiting.
    let mut heartbeat = tokio::time::interval(limit / 4);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => apply(shared, &message),
                None => {
                    let answered = in_flight.map(|(waiters, _)| waiters).unwrap_or_default();
                    return lost(waiting, answered, "connection lost");
                }
            },
            request = requests.recv() => match request {
                Some(tx) => waiting.push(tx),
                None => return End::Stop,
            },
            pong = answer(&mut in_flight) => {
                let (answered, sent) = match in_flight.take() {
                    Some((waiters, (sent, _))) => (waiters, Some(sent)),
                    None => (Vec::new(), None),
                };
                if let Err(cause) = pong {
                    return lost(waiting, answered, &cause);
                }
                // Notices that came before the PONG are in the stream already.
                while let Some(Some(message)) = stream.next().now_or_never() {
                    apply(shared, &message);
                }
                if let (Some(sent), Some(strong)) = (sent, shared.upgrade())
                    && let Some(cluster) = &strong.cluster
                {
                    cluster.coherent_since(sent);
                }
                for tx in answered {
                    let _ = tx.send(true);
                }
            },
            _ = heartbeat.tick(), if in_flight.is_none() => {
                in_flight = Some((Vec::new(), ping(&sink, limit)));
            },
        }
        if in_flight.is_none() && !waiting.is_empty() {
            in_flight = Some((std::mem::take(&mut waiting), ping(&sink, limit)));
        }
    }
}

fn ping(sink: &redis::aio::PubSubSink, limit: Duration) -> Ping {
    let mut sink = sink.clone();
    let sent = std::time::Instant::now();
    let answer = Box::pin(async move {
        match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("timed out".to_owned()),
        }
    });
    (sent, answer)
}

/// The in-flight ping's answer; never, when there is none.
async fn answer(in_flight: &mut Option<(Waiters, Ping)>) -> Result<(), String> {
    match in_flight {
        Some((_, (_, ping))) => ping.await,
        None => std::future::pending().await,
    }
}

fn lost(waiting: Waiters, answered: Waiters, cause: &str) -> End {
    for tx in waiting.into_iter().chain(answered) {
        let _ = tx.send(false);
    }
    End::Lost(cause.to_owned())
}

/// Applies a message: another instance's write drops the resource's cached variants
/// (then, when asked, this instance acks it); any write or release wakes this instance's
/// writer waiting for the lease; an ack of our own write is counted.
fn apply(shared: &Weak<Shared>, message: &Msg) {
    let Some(shared) = shared.upgrade() else { return };
    let Some(cluster) = &shared.cluster else { return };
    let Some(message) = Message::parse(message.get_payload_bytes()) else {
        tracing::debug!("ignored a malformed cluster message");
        return;
    };
    match message {
        Message::Written {
            instance,
            seq,
            acked,
            route,
            path,
        } => {
            let route = cluster.route_id(route);
            if instance != cluster.instance
                && let Some(route) = route
            {
                shared.cache.invalidate(route, path);
                cluster.counters.invalidations_received.fetch_add(1, Relaxed);
            }
            if acked {
                cluster.send_ack(instance, seq);
            }
            if let Some(route) = route {
                shared.resources.lease_released(route, path);
            }
        }
        Message::Released { route, path, .. } => {
            if let Some(route) = cluster.route_id(route) {
                shared.resources.lease_released(route, path);
            }
        }
        Message::Ack { writer, seq } => {
            if writer == cluster.instance {
                cluster.acked(seq);
            }
        }
    }
}
