//! Recent versions shared through Redis (`[cluster]` and `route.history`): a version one
//! instance kept can be the base of a merge or a delta read on another.
//!
//! Per resource and requester (route, upstream path, and a BLAKE3 hash of the query and
//! the requester fingerprint: no credential in a key name) a hash of ETag → body and a
//! list of ETags, oldest first, trimmed to `route.history` and expiring after a day
//! without a new version. Stored in the background: a version is findable on other
//! instances a round trip after it was kept here.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::Cluster;
use crate::cache::{Entry, Key};
use crate::etag::EntityTag;
use crate::layer::Shared;

/// How long a resource's versions live without a new one.
const KEEP_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Adds a version (ARGV: tag, body, count kept, expiry in ms) unless it is there already.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then \
           redis.call('RPUSH', KEYS[2], ARGV[1]) \
           while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[3]) do \
             redis.call('HDEL', KEYS[1], redis.call('LPOP', KEYS[2])) \
           end \
         end \
         redis.call('PEXPIRE', KEYS[1], ARGV[4]) \
         redis.call('PEXPIRE', KEYS[2], ARGV[4]) \
         return 1",
    )
});

/// Shares a version this instance just kept, in the background.
pub(crate) fn share_version(shared: &Arc<Shared>, route: &str, key: &Key, entry: &Entry, keep: usize) {
    let Some(cluster) = &shared.cluster else { return };
    if !cluster.is_up() {
        return;
    }
    let keys = cluster.version_keys(route, key);
    let tag = String::from_utf8_lossy(entry.etag().to_header_value().as_bytes()).into_owned();
    let body = Bytes::copy_from_slice(entry.body_bytes());
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let Some(cluster) = &shared.cluster else { return };
        let Ok(mut commands) = cluster.commands_even_if_down() else {
            return;
        };
        let (keep, ttl) = (keep.to_string(), KEEP_FOR.as_millis().to_string());
        let mut invocation = STORE.prepare_invoke();
        invocation.key(&keys[0]).key(&keys[1]);
        invocation.arg(&tag).arg(body.as_ref()).arg(&keep).arg(&ttl);
        if let Err(error) = invocation.invoke_async::<i64>(&mut commands).await {
            cluster.failed(&error);
        }
    });
}

impl Cluster {
    /// The two keys of (route, key): the bodies and their order.
    fn version_keys(&self, route: &str, key: &Key) -> [String; 2] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(key.query.as_deref().unwrap_or_default().as_bytes());
        hasher.update(&[0]);
        hasher.update(key.requester.as_bytes());
        let hex = hasher.finalize().to_hex();
        let who = hex.get(..32).unwrap_or_default();
        let base = self.key("versions", route, &key.path);
        [format!("{base}:{who}"), format!("{base}:{who}:order")]
    }

    /// A version another instance kept, as an entry tagged `tag`.
    pub(crate) async fn find_version(&self, route: &str, key: &Key, tag: &EntityTag) -> Option<Arc<Entry>> {
        if !self.is_up() {
            return None;
        }
        let [bodies, _] = self.version_keys(route, key);
        let mut commands = self.commands_even_if_down().ok()?;
        let body: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&bodies)
            .arg(tag.to_header_value().as_bytes())
            .query_async(&mut commands)
            .await
            .map_err(|e| self.failed(&e))
            .ok()?;
        Some(Arc::new(Entry::new(
            &body?,
            tag,
            Arc::new(http::HeaderMap::new()),
        )))
    }
}
