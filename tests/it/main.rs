//! All integration tests, in one binary: real legacy upstream, real proxy, real HTTP.

mod support;

mod cli;
mod forward;
mod reads;
mod tls;
mod upstream_selftest;
mod writes;
