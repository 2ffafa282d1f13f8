//! `proxy.toml` exactly as written: every key optional (missing ones are reported by
//! validation with the table's position), every value `Spanned` so messages can point at it.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

type Text = Option<Spanned<String>>;
type List = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<RawServer>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub cache: Option<RawCache>,
    pub route: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub redis: Text,
    pub sentinels: List,
    pub sentinel_master: Text,
    pub cluster_nodes: List,
    pub key_prefix: Text,
    pub password_env: Text,
    pub ca_file: Text,
    pub lease: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub lease_poll: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Text,
    pub max_body_bytes: Option<Spanned<RawSize>>,
    pub request_timeout: Option<Spanned<RawDuration>>,
    pub shutdown_grace: Option<Spanned<RawDuration>>,
    pub write_timeout: Option<Spanned<RawDuration>>,
    pub header_read_timeout: Option<Spanned<RawDuration>>,
    pub body_read_timeout: Option<Spanned<RawDuration>>,
    pub max_connections: Option<Spanned<i64>>,
    pub tls: Option<Spanned<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: Text,
    pub key: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub max_bytes: Option<Spanned<RawSize>>,
    pub max_entry_bytes: Option<Spanned<RawSize>>,
    pub key_headers: List,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Text,
    pub path: Text,
    pub upstream: Text,
    pub strip_prefix: Text,
    pub freshness: Text,
    pub etag: Text,
    pub patch: List,
    pub write_method: Text,
    pub require_precondition: Option<Spanned<bool>>,
    pub conflict_retries: Option<Spanned<i64>>,
    pub patch_max_ops: Option<Spanned<i64>>,
    pub refresh_after_write: Option<Spanned<bool>>,
    pub heuristic_freshness: Option<Spanned<bool>>,
    pub batch_patches: Option<Spanned<bool>>,
    pub batch_reads: Option<Spanned<bool>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub history: Option<Spanned<i64>>,
    pub on_stale: Text,
    pub changes: Option<Spanned<bool>>,
    pub ca_file: Text,
}

/// A size as written: a TOML integer of bytes or a string such as `"1MiB"`.
#[derive(Debug)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1MiB\" or an integer number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                // TOML integers are i64, so this only happens with other deserializers.
                Ok(i64::try_from(v).map_or_else(|_| RawSize::Text(v.to_string()), RawSize::Bytes))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// A duration string; a dedicated type so a bare number gets a message asking for a unit.
#[derive(Debug)]
pub(super) struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit, such as \"30s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }
        d.deserialize_str(DurationVisitor)
    }
}
