//! All integration tests, in one binary: real legacy upstream, real proxy, real HTTP.

mod support;

mod access_log;
mod batch;
mod cache_control;
mod changes;
mod cli;
mod cluster;
mod custom_service;
mod forward;
mod history;
mod hostile;
mod http_freshness;
mod isolation;
mod landing;
mod limits;
mod pooled;
mod protocol;
mod reads;
mod reload;
mod soak;
mod tls;
mod upstream_selftest;
mod writes;
