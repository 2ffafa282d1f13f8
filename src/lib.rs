//! patchgate: a reverse proxy that gives a legacy JSON HTTP API strong ETags, 304s,
//! PATCH (JSON Patch and Merge Patch turned into full writes upstream), enforced
//! preconditions, 412s that carry the current body, and no lost updates.
//!
//! The core is [`PatchLayer`], a tower layer over any upstream HTTP service; the binary
//! puts it over a pooled hyper client ([`upstream::client`]) behind a hyper server
//! ([`server::Proxy`]).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin; // health and Prometheus metrics listener
pub mod body; // the one boxed body type, bounded and prefixed bodies (leaf)
pub mod cache; // bounded LRU body cache with coalescing
pub mod cluster; // several instances through Redis: write leases, cache coherence
pub mod config; // proxy.toml: raw TOML → validated Config
mod delta; // delta reads: 226 IM Used with a patch from a recent version
pub mod demo; // embedded legacy API for `patchgate demo`
pub mod etag; // entity tags (RFC 9110 §8.8.3)
pub mod feed; // the change feed: confirmed writes as server-sent events on the admin listener
pub mod headers; // header names, hop-by-hop stripping, Content-Length, Via (leaf)
mod landing; // sent writes run to their end; resources whose state is unknown
pub mod layer; // PatchLayer / PatchService: the request walk
pub mod logging; // the subscriber, and the access log written off the request's task
pub mod metrics; // counters and histograms
pub mod patch; // JSON Patch / Merge Patch with fidelity (RFC 6902, 7396)
pub mod precondition; // conditional requests (RFC 9110 §13)
pub mod problem; // problem+json errors, mapped once (RFC 9457)
mod read; // the read path: cache, ETags, 304
pub mod reload; // proxy.toml re-read on SIGHUP and POST /reload: validated, then applied or refused
pub mod requester; // who is asking: one fingerprint decides every sharing
mod resource; // one home per resource: write queue, read coalescer, kept document, uncertainty
pub mod route; // templates, prefix stripping, path safety
pub mod server; // accept, TLS, HTTP/1.1 + h2, graceful shutdown; serves any Service
mod settings; // one generation of routes and limits; route identities across reloads
pub mod upstream; // pooled client (resends after a reused connection closed), forwarding headers, timed exchanges and body reads, typed errors
mod write; // the write path: lock, preconditions, patch, write, cache update

pub use config::Config;
pub use layer::{PatchLayer, PatchService};
pub use server::Proxy;
