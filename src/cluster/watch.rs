//! The subscriber: one connection per instance that receives the other instances'
//! notices (applying and acking them), keeps the coherence window open with `PING`s, and
//! answers the writers' barrier (see the module above).
//!
//! Invariant: a `PONG` counts (for a barrier, or the window from its `PING`'s sending)
//! only once every notice received before it has been applied. The cache is emptied
//! whenever a subscription (re)starts, because notices may have been missed while there
//! was none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::message::Message;
use super::{Cluster, Commands, Source, describe};
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

/// What a subscription delivers: a message's payload, or the end of trust in it.
enum Item {
    Payload(Vec<u8>),
    /// Messages may have been lost (the connection or the slot moved): start over.
    Lost(String),
}

/// A subscription to the channel: one server's pub/sub connection, or a Redis Cluster
/// connection subscribed to the sharded channel. Either way, a `ping`'s answer comes
/// after every message delivered before the ping reached the server.
enum Feed {
    One {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Cluster {
        connection: redis::cluster_async::ClusterConnection,
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
        /// A key of the channel's slot: reading it goes to the node that delivers the
        /// channel's messages, on the same connection.
        key: String,
    },
}

impl Feed {
    async fn next(&mut self) -> Item {
        match self {
            Feed::One { stream, .. } => match stream.next().await {
                Some(message) => Item::Payload(message.get_payload_bytes().to_vec()),
                None => Item::Lost("connection lost".to_owned()),
            },
            Feed::Cluster { pushes, .. } => match pushes.recv().await {
                Some(push) => cluster_item(push),
                None => Item::Lost("connection lost".to_owned()),
            },
        }
    }

    /// An item already received, without waiting.
    fn ready(&mut self) -> Option<Item> {
        match self {
            Feed::One { stream, .. } => {
                let message = stream.next().now_or_never()??;
                Some(Item::Payload(message.get_payload_bytes().to_vec()))
            }
            Feed::Cluster { pushes, .. } => pushes.try_recv().ok().map(cluster_item),
        }
    }

    fn ping(&self, limit: Duration) -> Ping {
        let sent = std::time::Instant::now();
        let answer: Pin<Box<dyn Future<Output = Result<(), String>> + Send>> = match self {
            Feed::One { sink, .. } => {
                let mut sink = sink.clone();
                Box::pin(async move {
                    match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(describe(&e)),
                        Err(_) => Err("timed out".to_owned()),
                    }
                })
            }
            Feed::Cluster { connection, key, .. } => {
                let mut connection = connection.clone();
                let exists = redis::cmd("EXISTS").arg(key.as_str()).clone();
                Box::pin(async move {
                    let asked = exists.query_async::<redis::Value>(&mut connection);
                    match tokio::time::timeout(limit, asked).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(describe(&e)),
                        Err(_) => Err("timed out".to_owned()),
                    }
                })
            }
        };
        (sent, answer)
    }
}

/// A Redis Cluster push: a message, or (after the subscription began) a sign that the
/// connection or the slot moved, and messages may have been lost on the way.
fn cluster_item(push: redis::PushInfo) -> Item {
    use redis::PushKind;
    match push.kind {
        PushKind::SMessage => match push.data.get(1) {
            Some(redis::Value::BulkString(payload)) => Item::Payload(payload.clone()),
            _ => Item::Payload(Vec::new()),
        },
        PushKind::Disconnection => Item::Lost("connection lost".to_owned()),
        PushKind::SSubscribe | PushKind::SUnsubscribe => Item::Lost("the channel's slot moved".to_owned()),
        _ => Item::Payload(Vec::new()),
    }
}

/// Subscribes to the channel where `source` says Redis is.
async fn subscribe(cluster: &Cluster, source: &Source) -> Result<Feed, String> {
    let limit = cluster.settings.timeout;
    let channel = cluster.channel();
    let timed = |e: Result<redis::RedisResult<()>, tokio::time::error::Elapsed>| match e {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("timed out".to_owned()),
    };
    if let Source::Cluster(spec) = source {
        let (tx, mut pushes) = mpsc::unbounded_channel();
        let client = spec
            .build(Some(tx), cluster.settings.timeout)
            .map_err(|e| describe(&e))?;
        let mut connection = match tokio::time::timeout(limit * 2, client.get_async_connection()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(describe(&e)),
            Err(_) => return Err("timed out".to_owned()),
        };
        timed(tokio::time::timeout(limit, connection.ssubscribe(&channel)).await)?;
        // The subscription's own confirmation is no news.
        while pushes.try_recv().is_ok() {}
        cluster.use_commands(Commands::Cluster(connection.clone()));
        let key = cluster.global_key("epoch");
        return Ok(Feed::Cluster {
            connection,
            pushes,
            key,
        });
    }
    // For Sentinel, the primary now: it may have changed since the last subscription.
    let client = match tokio::time::timeout(limit * 2, source.resolve()).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return Err(describe(&e)),
        Err(_) => return Err("timed out".to_owned()),
    };
    cluster
        .connect_commands(client.clone())
        .map_err(|e| describe(&e))?;
    let pubsub = match tokio::time::timeout(limit, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return Err(describe(&e)),
        Err(_) => return Err("timed out".to_owned()),
    };
    let (mut sink, stream) = pubsub.split();
    timed(tokio::time::timeout(limit, sink.subscribe(&channel)).await)?;
    Ok(Feed::One { sink, stream })
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
    let mut feed = match subscribe(cluster, source).await {
        Ok(feed) => feed,
        Err(cause) => return End::Lost(cause),
    };
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
            item = feed.next() => match item {
                Item::Payload(payload) => apply(shared, &payload),
                Item::Lost(cause) => {
                    let answered = in_flight.map(|(waiters, _)| waiters).unwrap_or_default();
                    return lost(waiting, answered, &cause);
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
                // Notices that came before the answer are in the feed already.
                while let Some(item) = feed.ready() {
                    match item {
                        Item::Payload(payload) => apply(shared, &payload),
                        Item::Lost(cause) => return lost(waiting, answered, &cause),
                    }
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
                in_flight = Some((Vec::new(), feed.ping(limit)));
            },
        }
        if in_flight.is_none() && !waiting.is_empty() {
            in_flight = Some((std::mem::take(&mut waiting), feed.ping(limit)));
        }
    }
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
fn apply(shared: &Weak<Shared>, payload: &[u8]) {
    let Some(shared) = shared.upgrade() else { return };
    let Some(cluster) = &shared.cluster else { return };
    let Some(message) = Message::parse(payload) else {
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
            let route = route_id(&shared, route);
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
            if let Some(route) = route_id(&shared, route) {
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

/// The id of the route that notices name `name` in the settings in use now: an entry of
/// an earlier generation's route is unreachable anyway (see [`crate::settings`]).
fn route_id(shared: &Shared, name: &str) -> Option<u32> {
    shared.settings.load().routes.by_name(name).map(|route| route.id)
}
