//! All integration tests, in one binary: real legacy upstream, real proxy, real HTTP.

mod support;

mod batch;
mod cli;
mod forward;
mod hostile;
mod limits;
mod pooled;
mod reads;
mod soak;
mod tls;
mod upstream_selftest;
mod writes;
