//! Writes spread over many documents: every request of every connection goes to the next
//! of `PATCHGATE_BENCH_DOCS` (1 000) documents, round robin, so no write waits for
//! another's per-document lock. PUT and PATCH through patchgate, and PUT through nginx
//! `proxy_pass` when it runs, each against direct PUTs measured right before it.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, StatusCode, header};

use crate::client::{Load, RequestBody};
use crate::servers::Upstream;
use crate::{Case, Settings, common, patch_load};

fn documents() -> usize {
    std::env::var("PATCHGATE_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1)
}

pub fn cases(settings: &Settings, upstream: &Upstream, nginx: Option<SocketAddr>, size: usize) -> Vec<Case> {
    let doc = Bytes::from(common::document(size));
    let n = documents();
    // Seeds `n` documents under a name of their own; the paths, with a route prefix.
    let seed = |name: &str, prefix: &str| -> Vec<String> {
        (0..n)
            .map(|k| {
                let path = format!("/docs/{size}/spread-{name}/{k}");
                upstream.put(&path, doc.clone());
                format!("{prefix}{path}")
            })
            .collect()
    };
    let put = |docs: Vec<String>| {
        let mut load = Load::new(
            Method::PUT,
            vec![String::new(); settings.conns],
            StatusCode::NO_CONTENT,
        );
        load.set_header(header::CONTENT_TYPE, "application/json");
        load.body = RequestBody::Fixed(doc.clone());
        load.spread_over(docs)
    };
    let patch = |docs: Vec<String>| patch_load(vec![String::new(); settings.conns]).spread_over(docs);
    let scenario_put = "PUT, spread over many documents";
    let scenario_patch = "PATCH (one replace) vs PUT, spread over many documents";

    let mut cases = Vec::new();
    if let Some(addr) = nginx {
        cases.push(Case {
            size,
            scenario: scenario_put,
            freshness: "nginx proxy_pass",
            direct: put(seed("put-direct", "")),
            proxied: put(seed("put-nginx", "")),
            via: Some(addr),
        });
    }
    for (freshness, prefix) in [("exclusive", "/excl"), ("revalidate", "/reval")] {
        cases.push(Case {
            size,
            scenario: scenario_put,
            freshness,
            direct: put(seed("put-direct", "")),
            proxied: put(seed(&format!("put-{freshness}"), prefix)),
            via: None,
        });
        cases.push(Case {
            size,
            scenario: scenario_patch,
            freshness,
            direct: put(seed("put-direct", "")),
            proxied: patch(seed(&format!("patch-{freshness}"), prefix)),
            via: None,
        });
    }
    cases
}
