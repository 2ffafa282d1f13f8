//! Micro benchmarks of the pure cores on a request's path: ETag hashing, precondition
//! evaluation, patch parse/apply/serialize, and the cache under contention.
//!
//! `cargo bench --bench micro` (criterion; `-- etag` etc. to filter).

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use patchgate::cache::{Cache, Entry, Key};
use patchgate::etag::EntityTag;
use patchgate::patch::{Document, Format, Patch};
use patchgate::precondition::{Conditions, Current, evaluate};

const SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];

fn etag(c: &mut Criterion) {
    let mut group = c.benchmark_group("etag/from_body");
    for size in SIZES {
        let body = common::document(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(common::size_label(size)),
            &body,
            |b, body| b.iter(|| EntityTag::from_body(black_box(body))),
        );
    }
    group.finish();
}

fn precondition(c: &mut Criterion) {
    let current_tag = EntityTag::from_body(&common::document(1024));
    let others: Vec<String> = (0..4)
        .map(|i| EntityTag::from_body(format!("other {i}").as_bytes()).to_string())
        .collect();
    let current = Current {
        exists: true,
        etag: Some(&current_tag),
        last_modified: None,
    };
    // Lists as clients send them: the matching tag last, so a parser has to walk them.
    let with_current = format!("{}, {}", others.join(", "), current_tag);
    let without_current = others.join(", ");
    let cases: [(&str, header::HeaderName, &str, bool); 4] = [
        (
            "if_none_match_list_hit",
            header::IF_NONE_MATCH,
            &with_current,
            true,
        ),
        (
            "if_none_match_list_miss",
            header::IF_NONE_MATCH,
            &without_current,
            true,
        ),
        ("if_match_list_hit", header::IF_MATCH, &with_current, false),
        ("if_match_list_miss", header::IF_MATCH, &without_current, false),
    ];
    let mut group = c.benchmark_group("precondition/from_headers+evaluate");
    for (name, header_name, value, safe) in cases {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header_name, HeaderValue::from_str(value).unwrap());
        group.bench_function(name, |b| {
            b.iter(|| {
                let conditions = Conditions::from_headers(black_box(&headers));
                evaluate(&conditions, black_box(&current), safe)
            })
        });
    }
    let empty = HeaderMap::new();
    group.bench_function("no_conditions", |b| {
        b.iter(|| {
            evaluate(
                &Conditions::from_headers(black_box(&empty)),
                black_box(&current),
                true,
            )
        })
    });
    group.finish();
}

const REPLACE: &[u8] = br#"[{"op":"replace","path":"/n","value":1}]"#;
const MERGE: &[u8] = br#"{"n":1,"meta":{"labels":["alpha","beta","gamma"]}}"#;

fn patch(c: &mut Criterion) {
    let max = 1 << 20;
    let mut parse = c.benchmark_group("patch/document_parse");
    for size in SIZES {
        let body = common::document(size);
        parse.throughput(Throughput::Bytes(body.len() as u64));
        parse.bench_with_input(
            BenchmarkId::from_parameter(common::size_label(size)),
            &body,
            |b, body| b.iter(|| Document::parse(black_box(body)).unwrap()),
        );
    }
    parse.finish();

    for (name, format, patch_body) in [
        ("json_patch_replace", Format::JsonPatch, REPLACE),
        ("merge_patch", Format::MergePatch, MERGE),
    ] {
        let patch = Patch::parse(format, patch_body, 1000).unwrap();
        check(name, &patch);
        let mut apply = c.benchmark_group(format!("patch/apply+serialize/{name}"));
        for size in SIZES {
            let doc = Document::parse(&common::document(size)).unwrap();
            apply.throughput(Throughput::Bytes(size as u64));
            apply.bench_with_input(
                BenchmarkId::from_parameter(common::size_label(size)),
                &doc,
                |b, doc| {
                    b.iter(|| {
                        patch
                            .apply(black_box(doc).clone(), max)
                            .unwrap()
                            .serialize(max)
                            .unwrap()
                    })
                },
            );
        }
        apply.finish();
    }

    // What the write path does per PATCH: parse the current document and the patch,
    // apply, serialize, and tag the new body.
    let mut pipeline = c.benchmark_group("patch/write_path/json_patch_replace");
    for size in SIZES {
        let body = common::document(size);
        pipeline.throughput(Throughput::Bytes(body.len() as u64));
        pipeline.bench_with_input(
            BenchmarkId::from_parameter(common::size_label(size)),
            &body,
            |b, body| {
                b.iter(|| {
                    let doc = Document::parse(black_box(body)).unwrap();
                    let patch = Patch::parse(Format::JsonPatch, black_box(REPLACE), 1000).unwrap();
                    let new = patch.apply(doc, max).unwrap().serialize(max).unwrap();
                    EntityTag::from_body(&new)
                })
            },
        );
    }
    pipeline.finish();
}

/// A few operations, as a client sends them: a version check, a scalar, an append.
const FEW_OPS: &[u8] = br#"[{"op":"test","path":"/version","value":3},{"op":"replace","path":"/n","value":1},{"op":"add","path":"/meta/labels/-","value":"gamma"}]"#;

/// The whole PATCH pipeline per document size, old (parse into a tree) against new
/// (index in one scan where the document allows, [`Document::index`]) against a body a
/// PATCH wrote ([`Document::index_written`]): parse the patch,
/// ready the document, apply, serialize, tag.
fn pipeline(c: &mut Criterion) {
    let max = 64 << 20;
    for (name, format, patch_body) in [
        ("json_patch_few_ops", Format::JsonPatch, FEW_OPS),
        ("merge_patch", Format::MergePatch, MERGE),
    ] {
        let mut group = c.benchmark_group(format!("patch/pipeline/{name}"));
        for size in [1024, 16 * 1024, 256 * 1024, 4 << 20] {
            let body = Bytes::from(common::document(size));
            let patch = Patch::parse(format, patch_body, 1000).unwrap();
            let old = |body: &Bytes| {
                let patch = Patch::parse(format, black_box(patch_body), 1000).unwrap();
                let doc = Document::parse(body).unwrap();
                let new = patch.apply(doc, max).unwrap().serialize(max).unwrap();
                (EntityTag::from_body(&new), new.len())
            };
            let new = |body: &Bytes| {
                let patch = Patch::parse(format, black_box(patch_body), 1000).unwrap();
                let doc = Document::index(body, &patch).unwrap_or_else(|| Document::parse(body).unwrap());
                let new = patch.apply(doc, max).unwrap().serialize(max).unwrap();
                (EntityTag::from_body(&new), new.len())
            };
            // A body a PATCH wrote: the one after it on the same document skips what it
            // does not name.
            let written = |body: &Bytes| {
                let patch = Patch::parse(format, black_box(patch_body), 1000).unwrap();
                let doc = Document::index_written(body, &patch).unwrap();
                let new = patch.apply(doc, max).unwrap().serialize(max).unwrap();
                (EntityTag::from_body(&new), new.len())
            };
            assert_eq!(old(&body), written(&body), "a written body gives the same bytes");
            assert!(
                Document::index(&body, &patch).is_some(),
                "the bench document is indexed"
            );
            assert_eq!(old(&body), new(&body), "both paths write the same bytes");
            group.throughput(Throughput::Bytes(body.len() as u64));
            if size > 256 * 1024 {
                group.sample_size(10);
            }
            let label = common::size_label(size);
            group.bench_with_input(BenchmarkId::new("old", &label), &body, |b, body| {
                b.iter(|| old(black_box(body)))
            });
            group.bench_with_input(BenchmarkId::new("new", &label), &body, |b, body| {
                b.iter(|| new(black_box(body)))
            });
            group.bench_with_input(BenchmarkId::new("written", &label), &body, |b, body| {
                b.iter(|| written(black_box(body)))
            });
        }
        group.finish();
    }
}

/// Other document shapes, ~256 KiB each, indexed for a one-member patch: validated (a
/// body from the upstream) and skipped (a body a PATCH wrote).
fn shapes(c: &mut Criterion) {
    let patch = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"replace","path":"/n","value":1}]"#,
        1000,
    )
    .unwrap();
    let items = |item: &dyn Fn(usize) -> String| {
        let mut out = String::from(r#"{"n":0,"items":["#);
        let mut i = 0;
        while out.len() < 256 * 1024 {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&item(i));
            i += 1;
        }
        out.push_str("]}");
        Bytes::from(out)
    };
    let mut nested = String::from(r#"{"n":0,"tree":["#);
    while nested.len() < 256 * 1024 {
        nested.push_str(r#"{"a":[[1,{"b":[true,null]}],{"c":{"d":[2,3]}}],"e":"f"},"#);
    }
    nested.push_str("0]}");
    let cases = [
        (
            "escapes",
            items(&|i| format!(r#""line {i}\n\t\"quoted\" \\ path\u0001""#)),
        ),
        (
            "integers",
            items(&|i| format!("{},{}", i * 7919 % 100_003, i % 10)),
        ),
        ("nesting", Bytes::from(nested)),
        (
            "long_strings",
            items(&|i| format!(r#""{}""#, "lorem ipsum dolor sit amet ".repeat(8 + i % 4))),
        ),
        (
            "non_ascii",
            items(&|i| {
                format!(r#"{{"name":"Zoë Ångström {i}","city":"東京都","note":"naïve café — ünïcödé"}}"#)
            }),
        ),
    ];
    let mut group = c.benchmark_group("patch/index_shapes");
    for (name, body) in cases {
        assert!(Document::index(&body, &patch).is_some(), "{name} is indexed");
        assert!(
            Document::index_written(&body, &patch).is_some(),
            "{name} is indexed as written"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("validated", name), &body, |b, body| {
            b.iter(|| Document::index(black_box(body), &patch))
        });
        group.bench_with_input(BenchmarkId::new("written", name), &body, |b, body| {
            b.iter(|| Document::index_written(black_box(body), &patch))
        });
    }
    group.finish();
}

/// Once, before measuring: the patch applies, and changes only what it names.
fn check(name: &str, patch: &Patch) {
    let body = common::document(1024);
    let new = patch
        .apply(Document::parse(&body).unwrap(), 1 << 20)
        .unwrap()
        .serialize(1 << 20)
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    let expected = match name {
        "json_patch_replace" => text.replacen(r#""n":0"#, r#""n":1"#, 1),
        _ => text.replacen(r#""n":0"#, r#""n":1"#, 1).replacen(
            r#"["alpha","beta"]"#,
            r#"["alpha","beta","gamma"]"#,
            1,
        ),
    };
    assert_eq!(
        String::from_utf8_lossy(&new),
        expected,
        "{name} changed more than it names"
    );
}

fn key(route: u32, path: &str) -> Key {
    Key {
        route,
        path: path.into(),
        query: None,
        // No credentials: an anonymous requester.
        requester: Default::default(),
    }
}

fn entry(body: Bytes, etag: &EntityTag) -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Entry::new(&body, etag, std::sync::Arc::new(headers))
}

/// Runs `op(thread, i)` `iters` times on each of `threads` threads started together and
/// returns the wall time: with `Throughput::Elements(threads)` criterion reports the
/// aggregate operations per second.
fn contended(threads: usize, iters: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    op(t, i);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn cache(c: &mut Criterion) {
    let request = {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h
    };
    let body = Bytes::from(common::document(1024));
    let tag = EntityTag::from_body(&body);

    // Hits: one hot key shared by every thread, or one key per thread.
    let cache = Cache::new(256 << 20, 8 << 20);
    let keys: Vec<Key> = (0..8).map(|i| key(0, &format!("/docs/{i}"))).collect();
    for k in &keys {
        cache
            .insert(k.clone(), &request, entry(body.clone(), &tag))
            .unwrap();
    }
    let mut group = c.benchmark_group("cache/get_hit");
    for threads in [1, 2, 4] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(BenchmarkId::new("same_key", format!("{threads}threads")), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, &|_, _| {
                    black_box(cache.get(black_box(&keys[0]), &request).unwrap());
                })
            })
        });
        group.bench_function(
            BenchmarkId::new("key_per_thread", format!("{threads}threads")),
            |b| {
                b.iter_custom(|iters| {
                    contended(threads, iters, &|t, _| {
                        black_box(cache.get(black_box(&keys[t]), &request).unwrap());
                    })
                })
            },
        );
    }
    group.finish();

    // Inserts under eviction pressure: 4096 distinct keys into room for about 64
    // entries, so nearly every insert evicts.
    let room = 64 * (body.len() as u64 + 512);
    let paths: Vec<Key> = (0..4096).map(|i| key(0, &format!("/docs/{i}"))).collect();
    let mut group = c.benchmark_group("cache/insert_evicting");
    for threads in [1, 2] {
        let cache = Cache::new(room, 8 << 20);
        // Fill it past its room first, so that every measured insert evicts.
        for k in &paths[..256] {
            cache
                .insert(k.clone(), &request, entry(body.clone(), &tag))
                .unwrap();
        }
        assert!(cache.stats().evictions > 0, "the insert bench does not evict");
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(format!("{threads}threads"), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, &|t, i| {
                    let k = &paths[(i as usize * threads + t) % paths.len()];
                    let _ = black_box(cache.insert(k.clone(), &request, entry(body.clone(), &tag)));
                })
            })
        });
        assert!(cache.stats().bytes <= room);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = etag, precondition, patch, pipeline, shapes, cache
}
criterion_main!(benches);
