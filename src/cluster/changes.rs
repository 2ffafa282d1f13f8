//! The change feed with `[cluster]`: one feed per route for every instance, in a Redis
//! stream `<prefix>changes:<route>` numbered by the counter `<prefix>seq:<route>` (one
//! slot on a Redis Cluster: both keys carry the prefix's hash tag).
//!
//! - **Publishing**: one script numbers the event (`INCR`), writes its JSON with the
//!   number in it, and appends it with the id `<seq>-1`, trimming the stream to about
//!   [`KEPT`] entries (`MAXLEN ~`). The writer awaits it (one round trip, bounded by
//!   `cluster.timeout`) before the write is answered and before its lease is released,
//!   so the events of one resource are in the order of its writes. A command whose
//!   connection dropped is sent once more; the script finds its own token on the last
//!   entry and does not append it twice (a duplicate stays possible only when another
//!   instance appended in between). Redis unreachable: the event is lost for the feed,
//!   logged and counted (`patchgate_cluster_feed_events_lost_total`).
//! - **Reading**: each stream has its own connection (blocking reads would hold up the
//!   shared one): the replay is `XRANGE (<since>-1 +`, then `XREAD BLOCK` from the last
//!   id seen. `410` when the first event after `since` was trimmed, judged from what is
//!   still in the stream, never from its length.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Cluster, Commands, Source, describe, random_token};
use crate::feed::{KEPT, Refusal};

/// How long one `XREAD` waits for an event.
const BLOCK: Duration = Duration::from_secs(5);
/// A comment line sent on an idle stream, as in [`crate::feed`].
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events taken per `XREAD`.
const BATCH: usize = 256;

/// KEYS: counter, stream. ARGV: token, the JSON after `{"seq":N`, the length kept.
/// Returns the event's sequence number.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local top = nil
if last[1] then
  top = tonumber(string.match(last[1][1], '^(%d+)'))
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'token' and fields[i + 1] == ARGV[1] then
      return top
    end
  end
end
local seq = redis.call('INCR', KEYS[1])
if top and top >= seq then
  seq = top + 1
  redis.call('SET', KEYS[1], seq)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-1',
  'event', '{"seq":' .. seq .. ARGV[2], 'token', ARGV[1])
return seq
"#,
    )
});

/// One stream entry: its sequence number and its SSE text.
type Event = (u64, Bytes);

impl Cluster {
    fn feed_keys(&self, route: &str) -> [String; 2] {
        [
            self.global_key(&format!("seq:{route}")),
            self.global_key(&format!("changes:{route}")),
        ]
    }

    /// Appends one event of `route` (`tail`: [`crate::feed::Feed::prepare`]'s JSON).
    pub(crate) async fn publish_change(&self, route: &str, tail: &[u8]) {
        let [seq, stream] = self.feed_keys(route);
        let token = random_token();
        let tail = String::from_utf8_lossy(tail);
        let kept = KEPT.to_string();
        let appended: Result<u64, ()> = self
            .eval(&APPEND, &[&seq, &stream], &[&token, &tail, &kept])
            .await;
        if appended.is_err() {
            self.counters.feed_events_lost.fetch_add(1, Relaxed);
            tracing::warn!(route, "change feed: event lost, redis did not answer");
        }
    }

    /// A connection of its own for one stream's blocking reads.
    async fn reader(&self) -> Result<Commands, String> {
        let source = self
            .source
            .as_deref()
            .ok_or_else(|| "[cluster] cannot be used".to_owned())?;
        let limit = self.settings.timeout;
        let connect = async {
            match source {
                Source::Cluster(spec) => {
                    let client = spec.build(None, BLOCK + limit)?;
                    Ok(Commands::Cluster(client.get_async_connection().await?))
                }
                Source::Direct(_) | Source::Sentinel(_) => {
                    let client = source.resolve().await?;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(limit))
                        .set_response_timeout(Some(BLOCK + limit))
                        .set_number_of_retries(1)
                        .set_max_delay(limit);
                    let connection = ConnectionManager::new_with_config(client, config).await?;
                    Ok::<_, redis::RedisError>(Commands::One(connection))
                }
            }
        };
        match tokio::time::timeout(limit * 2, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// Opens `route`'s shared stream after `since` (`None`: only new events); the route
    /// is one with a feed.
    pub(crate) async fn changes(
        &self,
        route: &str,
        since: Option<u64>,
    ) -> Result<impl futures_util::Stream<Item = Bytes> + Send + 'static, Refusal> {
        let [seq_key, stream] = self.feed_keys(route);
        let mut connection = self.reader().await.map_err(Refusal::Unreachable)?;
        let unreachable = |e: redis::RedisError| {
            self.failed(&e);
            Refusal::Unreachable(describe(&e))
        };
        let last: Option<u64> = redis::cmd("GET")
            .arg(&seq_key)
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        let last = last.unwrap_or(0);
        let (replay, from) = match since {
            None => (Vec::new(), last),
            Some(since) => {
                let value: redis::Value = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("({since}-1"))
                    .arg("+")
                    .query_async(&mut connection)
                    .await
                    .map_err(unreachable)?;
                let replay = entries(value).map_err(|e| Refusal::Unreachable(e.to_string()))?;
                // The first event after `since` must still be there (the counter and the
                // stream move together, in one script).
                let oldest = replay.first().map(|(seq, _)| *seq);
                let gap = since < last && oldest != Some(since + 1);
                if since > last || gap {
                    return Err(Refusal::Gone { oldest, last });
                }
                let from = replay.last().map_or(since, |(seq, _)| *seq);
                (replay, from)
            }
        };
        let state = Follow {
            connection,
            stream,
            from,
            pending: replay.into_iter().map(|(_, text)| text).collect(),
            idle_since: tokio::time::Instant::now(),
        };
        Ok(futures_util::stream::unfold(state, Follow::next))
    }
}

/// A stream following the feed: events not sent yet, then `XREAD BLOCK` after `from`.
struct Follow {
    connection: Commands,
    stream: String,
    from: u64,
    pending: VecDeque<Bytes>,
    idle_since: tokio::time::Instant,
}

impl Follow {
    /// The next text to send; `None` ends the stream (Redis failed: the client resumes
    /// with `Last-Event-ID`).
    async fn next(mut self) -> Option<(Bytes, Follow)> {
        loop {
            if let Some(text) = self.pending.pop_front() {
                self.idle_since = tokio::time::Instant::now();
                return Some((text, self));
            }
            if self.idle_since.elapsed() >= HEARTBEAT {
                self.idle_since = tokio::time::Instant::now();
                return Some((Bytes::from_static(b": keep-alive\n\n"), self));
            }
            let value: redis::Value = match redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(5000))
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(format!("{}-1", self.from))
                .query_async(&mut self.connection)
                .await
            {
                Ok(value) => value,
                Err(error) => {
                    tracing::debug!(error = %describe(&error), "change feed stream ended");
                    return None;
                }
            };
            let streams: Vec<redis::Value> = match value {
                redis::Value::Nil => Vec::new(),
                redis::Value::Array(streams) => streams
                    .into_iter()
                    .filter_map(|s| match s {
                        redis::Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                        _ => None,
                    })
                    .collect(),
                redis::Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
                _ => return None,
            };
            for value in streams {
                let Ok(events) = entries(value) else {
                    return None;
                };
                for (seq, text) in events {
                    self.from = seq;
                    self.pending.push_back(text);
                }
            }
        }
    }
}

/// `XRANGE`'s (or one stream of `XREAD`'s) entries as events.
fn entries(value: redis::Value) -> Result<Vec<Event>, redis::ParsingError> {
    let raw: Vec<(String, HashMap<String, String>)> = redis::from_redis_value(value)?;
    Ok(raw
        .into_iter()
        .filter_map(|(id, fields)| {
            let seq = id.split_once('-')?.0.parse::<u64>().ok()?;
            let json = fields.get("event")?;
            let text = format!("id: {seq}\nevent: change\ndata: {json}\n\n");
            Some((seq, Bytes::from(text)))
        })
        .collect())
}
