//! The upstream side: a pooled keep-alive hyper client (HTTP and HTTPS through rustls),
//! the request head patchgate sends upstream, one exchange bounded in time, upstream body
//! reads, and the classification of upstream failures.
//!
//! Invariant: the upstream's own error text is logged, never sent to a client.

mod client;
mod error;
mod exchange;
mod forwarding;
mod retry;
mod tracked;

pub use client::{CaProblem, Client, ClientError, client};
pub(crate) use exchange::{Upstream, read_body, read_or_stream};
pub use forwarding::{ConnInfo, Identity, identity, own_request, prepare};
pub use retry::{ReplayBody, set_body};
