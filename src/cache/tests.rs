//! The cache as a whole: storing, selecting, replacing, invalidating, the byte bound under
//! concurrent inserts, and request coalescing.

use super::budget::charge;
use super::*;
use crate::etag::EntityTag;
use bytes::Bytes;
use http::HeaderValue;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use crate::headers::map_of as headers;

fn entry(body: &str, response: &[(&str, &str)]) -> Entry {
    Entry::new(
        body.as_bytes(),
        &EntityTag::from_body(body.as_bytes()),
        Arc::new(headers(response)),
    )
}

fn key(route: u32, path: &str, query: Option<&str>, values: &[Option<&str>]) -> Key {
    Key {
        route,
        path: path.into(),
        query: query.map(Into::into),
        requester: requester(values),
    }
}

/// The fingerprint of an `authorization` and a `cookie` line, each present or not.
fn requester(values: &[Option<&str>]) -> Requester {
    let names = [http::header::AUTHORIZATION, http::header::COOKIE];
    let mut request = HeaderMap::new();
    for (name, value) in names.iter().zip(values) {
        if let Some(value) = value {
            request.insert(name, HeaderValue::from_str(value).unwrap());
        }
    }
    Requester::of(&names, &request)
}

fn body_of(cache: &Cache, key: &Key, request: &HeaderMap) -> Option<Bytes> {
    cache.get(key, request).map(|entry| entry.body())
}

/// What the map holds, summed independently of the counters.
fn resident(cache: &Cache) -> (u64, u64) {
    let entries: Vec<Arc<Entry>> = cache
        .resources
        .iter()
        .flat_map(|variants| variants.as_slice().to_vec())
        .collect();
    (
        entries.iter().map(|entry| entry.charge()).sum(),
        entries.len() as u64,
    )
}

#[test]
fn the_cache_can_be_shared_across_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Cache>();
}

#[test]
fn get_after_insert_returns_the_same_body_and_counts() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/people/1", None, &[]);
    assert!(cache.get(&k, &HeaderMap::new()).is_none());
    let stored = cache.insert(
        k.clone(),
        &HeaderMap::new(),
        entry("{\"a\":1}", &[("content-type", "application/json")]),
    );
    let got = cache.get(&k, &HeaderMap::new()).unwrap();
    assert!(Arc::ptr_eq(&stored.unwrap(), &got));
    assert_eq!(got.body(), Bytes::from_static(b"{\"a\":1}"));
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.inserts, stats.entries),
        (1, 1, 1, 1)
    );
}

#[test]
fn charge_counts_body_headers_keys_vary_tags_and_overhead() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", Some("x=1"), &[Some("Bearer t"), None]);
    let e = entry("body", &[("vary", "accept"), ("content-type", "a/b")]);
    let e = e.with_validators(Some(HeaderValue::from_static("\"up\"")), None);
    cache.insert(k, &headers(&[("accept", "j")]), e).unwrap();
    // The requester: a count and a length before `Bearer t`, a count of no cookies.
    let requester = (4 + 4 + 8) + 4;
    let expected = ENTRY_OVERHEAD + 4 + (4 + 6) + (12 + 3) + 2 + 3 + requester + (6 + 1) + 2 * 4;
    assert_eq!(cache.stats().bytes, expected);
    assert_eq!(resident(&cache), (expected, 1));
}

#[test]
fn an_entry_not_stored_comes_back_whole_and_a_stored_one_is_contained() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", None, &[]);
    let refused = cache
        .insert(
            k.clone(),
            &HeaderMap::new(),
            entry("body", &[("cache-control", "no-store")]),
        )
        .unwrap_err();
    assert_eq!(refused.body_bytes(), b"body");
    assert_eq!(refused.etag(), EntityTag::from_body(b"body"));
    assert!(refused.place.is_none());
    let stored = cache
        .insert(k.clone(), &HeaderMap::new(), entry("body", &[]))
        .unwrap();
    assert!(cache.contains(&stored));
    cache.invalidate(1, "/p");
    assert!(!cache.contains(&stored));
}

#[test]
fn no_store_response_is_not_stored() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", None, &[]);
    assert!(
        cache
            .insert(
                k.clone(),
                &HeaderMap::new(),
                entry("x", &[("cache-control", "max-age=5, no-store")])
            )
            .is_err()
    );
    assert!(cache.get(&k, &HeaderMap::new()).is_none());
    assert_eq!(
        cache.stats(),
        Stats {
            misses: 1,
            ..Stats::default()
        }
    );
}

#[test]
fn private_response_is_stored_only_under_a_requesters_key_values() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let private = [("cache-control", "max-age=60, private")];
    let alice = key(1, "/p", None, &[Some("Bearer a"), None]);
    assert!(alice.has_requester());
    assert!(
        cache
            .insert(alice.clone(), &HeaderMap::new(), entry("x", &private))
            .is_ok()
    );
    for anonymous in [key(1, "/p", None, &[]), key(1, "/p", None, &[None, None])] {
        assert!(!anonymous.has_requester());
        assert!(
            cache
                .insert(anonymous.clone(), &HeaderMap::new(), entry("y", &private))
                .is_err()
        );
        assert!(cache.get(&anonymous, &HeaderMap::new()).is_none());
    }
    assert_eq!(body_of(&cache, &alice, &HeaderMap::new()).unwrap(), "x");
    assert_eq!(cache.stats().entries, 1);
}

#[test]
fn no_cache_is_read_from_the_stored_headers() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let unstored = entry("x", &[("cache-control", "no-cache")]);
    assert!(unstored.no_cache());
    let stored = cache
        .insert(key(1, "/a", None, &[]), &HeaderMap::new(), unstored)
        .unwrap();
    let plain = cache
        .insert(key(1, "/b", None, &[]), &HeaderMap::new(), entry("y", &[]))
        .unwrap();
    assert!(stored.no_cache() && !plain.no_cache());
}

#[test]
fn replace_takes_the_place_of_a_stored_entry_only() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", None, &[]);
    let none = HeaderMap::new();
    let old = cache
        .insert(k.clone(), &none, entry("v1", &[("x", "a")]))
        .unwrap();
    let since = cache.generation(1, "/p");
    let new = cache
        .replace(since, &old, k.clone(), &none, entry("v1", &[("x", "b")]))
        .unwrap();
    assert!(!cache.contains(&old) && cache.contains(&new));
    assert_eq!((cache.stats().entries, resident(&cache).1), (1, 1));
    // `old` is gone: a second replacement of it would overwrite `new`.
    assert!(
        cache
            .replace(since, &old, k.clone(), &none, entry("v0", &[]))
            .is_err()
    );
    assert!(Arc::ptr_eq(&cache.get(&k, &none).unwrap(), &new));
    // A replacement that cannot be stored drops what it replaces.
    let refused = cache.replace(
        since,
        &new,
        k.clone(),
        &none,
        entry("v1", &[("cache-control", "no-store")]),
    );
    assert!(refused.is_err() && cache.get(&k, &none).is_none());
    // An invalidation since `since` wins.
    let old = cache.insert(k.clone(), &none, entry("v1", &[])).unwrap();
    cache.invalidate(1, "/p");
    assert!(cache.replace(since, &old, k, &none, entry("v1", &[])).is_err());
    assert_eq!((cache.stats().bytes, cache.stats().entries), (0, 0));
}

#[test]
fn vary_star_is_not_stored() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", None, &[]);
    assert!(
        cache
            .insert(k.clone(), &HeaderMap::new(), entry("x", &[("vary", "*")]))
            .is_err()
    );
    assert!(cache.get(&k, &HeaderMap::new()).is_none());
    assert_eq!((cache.stats().bytes, cache.stats().entries), (0, 0));
}

#[test]
fn entries_with_equal_headers_share_one_header_set() {
    let cache = Cache::new(1 << 20, 1 << 20);
    let json = [("content-type", "application/json")];
    let none = HeaderMap::new();
    let a = cache
        .insert(key(1, "/a", None, &[]), &none, entry("1", &json))
        .unwrap();
    let b = cache
        .insert(key(1, "/b", None, &[]), &none, entry("2", &json))
        .unwrap();
    let c = cache
        .insert(
            key(1, "/c", None, &[]),
            &none,
            entry("3", &[("content-type", "text/plain")]),
        )
        .unwrap();
    assert!(Arc::ptr_eq(&a.headers, &b.headers));
    assert!(!Arc::ptr_eq(&a.headers, &c.headers));
    assert_eq!(c.headers.get("content-type").unwrap(), "text/plain");
}

#[test]
fn vary_variants_are_kept_apart() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", None, &[]);
    let en = headers(&[("accept-language", "en")]);
    let fr = headers(&[("accept-language", "fr")]);
    let vary = [("vary", "Accept-Language")];
    cache.insert(k.clone(), &en, entry("hello", &vary)).unwrap();
    cache.insert(k.clone(), &fr, entry("bonjour", &vary)).unwrap();
    assert_eq!(body_of(&cache, &k, &en).unwrap(), "hello");
    assert_eq!(body_of(&cache, &k, &fr).unwrap(), "bonjour");
    assert!(cache.get(&k, &HeaderMap::new()).is_none());
    assert!(cache.get(&k, &headers(&[("accept-language", "de")])).is_none());
    assert_eq!(cache.stats().entries, 2);
}

#[test]
fn different_key_values_are_kept_apart() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let alice = key(1, "/p", None, &[Some("Bearer alice"), None]);
    let bob = key(1, "/p", None, &[Some("Bearer bob"), None]);
    let anonymous = key(1, "/p", None, &[None, None]);
    cache
        .insert(alice.clone(), &HeaderMap::new(), entry("alice's", &[]))
        .unwrap();
    assert!(cache.get(&bob, &HeaderMap::new()).is_none());
    assert!(cache.get(&anonymous, &HeaderMap::new()).is_none());
    cache
        .insert(bob.clone(), &HeaderMap::new(), entry("bob's", &[]))
        .unwrap();
    assert_eq!(body_of(&cache, &alice, &HeaderMap::new()).unwrap(), "alice's");
    assert_eq!(body_of(&cache, &bob, &HeaderMap::new()).unwrap(), "bob's");
}

#[test]
fn stored_request_values_do_not_pin_the_request_head() {
    // Parsed header values are slices of the connection's read buffer.
    let head = Bytes::from(vec![b'x'; 8192]);
    let slice = |range: std::ops::Range<usize>| HeaderValue::from_maybe_shared(head.slice(range)).unwrap();
    let cache = Cache::new(1 << 20, 1 << 16);
    let mut k = key(1, "/p", None, &[]);
    let mut request = HeaderMap::new();
    request.insert("authorization", slice(0..16));
    k.requester = Requester::of(&[http::header::AUTHORIZATION], &request);
    request.insert("accept-language", slice(16..32));
    cache
        .insert(k, &request, entry("body", &[("vary", "accept-language")]))
        .unwrap();
    drop(request);
    assert!(
        head.try_into_mut().is_ok(),
        "the cache holds no view of the request's buffer"
    );
}

#[test]
fn insert_replaces_the_variant_with_the_same_identity() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", Some("a=1"), &[]);
    let en = headers(&[("accept-language", "en")]);
    cache
        .insert(k.clone(), &en, entry("old", &[("vary", "accept-language")]))
        .unwrap();
    let first = cache.stats().bytes;
    cache
        .insert(k.clone(), &en, entry("new", &[("vary", "accept-language")]))
        .unwrap();
    assert_eq!(body_of(&cache, &k, &en).unwrap(), "new");
    assert_eq!((cache.stats().bytes, cache.stats().entries), (first, 1));
    assert_eq!(resident(&cache), (first, 1));
}

#[test]
fn invalidate_drops_all_queries_and_variants_of_that_path_only() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let en = headers(&[("accept-language", "en")]);
    let vary = [("vary", "accept-language")];
    let doomed = [
        key(1, "/people", None, &[]),
        key(1, "/people", Some("page=2"), &[]),
        key(1, "/people", None, &[Some("Bearer a")]),
    ];
    let kept = [
        key(1, "/people/1", None, &[]),
        key(2, "/people", None, &[]),
        key(1, "/peoples", None, &[]),
    ];
    for k in doomed.iter().chain(&kept) {
        cache.insert(k.clone(), &en, entry("x", &vary)).unwrap();
        cache
            .insert(k.clone(), &HeaderMap::new(), entry("y", &vary))
            .unwrap();
    }
    cache.invalidate(1, "/people");
    for k in &doomed {
        assert!(cache.get(k, &en).is_none());
        assert!(cache.get(k, &HeaderMap::new()).is_none());
    }
    for k in &kept {
        assert_eq!(body_of(&cache, k, &en).unwrap(), "x");
        assert_eq!(body_of(&cache, k, &HeaderMap::new()).unwrap(), "y");
    }
    cache.invalidate(1, "/nothing");
    let stats = cache.stats();
    assert_eq!((stats.invalidations, stats.entries), (1, 6));
    assert_eq!(resident(&cache), (stats.bytes, 6));
}

#[test]
fn oversize_entries_are_not_stored() {
    let cache = Cache::new(4000, 10);
    let k = key(1, "/p", None, &[]);
    assert!(
        cache
            .insert(k.clone(), &HeaderMap::new(), entry("01234567890", &[]))
            .is_err()
    );
    assert!(
        cache
            .insert(k.clone(), &HeaderMap::new(), entry("0123456789", &[]))
            .is_ok()
    );
    // Within max_entry_bytes but a charge over max_bytes.
    let tiny = Cache::new(ENTRY_OVERHEAD, 1 << 16);
    assert!(tiny.insert(k, &HeaderMap::new(), entry("x", &[])).is_err());
    assert_eq!(tiny.stats().bytes, 0);
}

#[test]
fn eviction_skips_recently_read_entries() {
    let one = charge(
        &key(1, "/0", None, &[]),
        &Selectors::capture(vec![], &HeaderMap::new()),
        &entry("x", &[]),
    );
    let cache = Cache::new(3 * one, 1 << 16);
    let keys: Vec<Key> = (0..4).map(|i| key(1, &format!("/{i}"), None, &[])).collect();
    for k in &keys[..3] {
        cache
            .insert(k.clone(), &HeaderMap::new(), entry("x", &[]))
            .unwrap();
    }
    assert!(cache.get(&keys[0], &HeaderMap::new()).is_some());
    cache
        .insert(keys[3].clone(), &HeaderMap::new(), entry("x", &[]))
        .unwrap();
    let present: Vec<bool> = keys
        .iter()
        .map(|k| cache.get(k, &HeaderMap::new()).is_some())
        .collect();
    assert_eq!(present, [true, false, true, true]);
    assert_eq!((cache.stats().evictions, cache.stats().bytes), (1, 3 * one));
}

#[test]
fn insert_since_refuses_a_read_that_raced_with_an_invalidation() {
    let cache = Cache::new(1 << 20, 1 << 16);
    let k = key(1, "/p", None, &[]);
    let before = cache.generation(1, "/p");
    cache.invalidate(1, "/p");
    assert!(
        cache
            .insert_since(before, k.clone(), &HeaderMap::new(), entry("stale", &[]))
            .is_err()
    );
    assert_eq!((cache.stats().bytes, cache.stats().entries), (0, 0));
    assert!(cache.resources.is_empty());
    let now = cache.generation(1, "/p");
    assert!(
        cache
            .insert_since(now, k.clone(), &HeaderMap::new(), entry("fresh", &[]))
            .is_ok()
    );
    assert_eq!(body_of(&cache, &k, &HeaderMap::new()).unwrap(), "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn bound_holds_under_concurrent_inserts_and_hot_keys_survive() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 1250;
    let max = 500 * 400;
    let cache = Arc::new(Cache::new(max, 1 << 16));
    let body = "b".repeat(100);
    let hot: Vec<Key> = (0..16).map(|i| key(1, &format!("/hot/{i}"), None, &[])).collect();
    for k in &hot {
        cache
            .insert(k.clone(), &HeaderMap::new(), entry(&body, &[]))
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                assert!(cache.stats().bytes <= max);
                tokio::task::yield_now().await;
            }
        })
    };
    let stored = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (cache, hot, body, stored) =
                (Arc::clone(&cache), hot.clone(), body.clone(), Arc::clone(&stored));
            let order = Arc::clone(&order);
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let k = key(1, &format!("/cold/{t}/{i}"), None, &[]);
                    // Recorded before the insert: a task preempted between the two
                    // can then only make its key look older than it is.
                    order.lock().unwrap().push(k.clone());
                    if cache.insert(k, &HeaderMap::new(), entry(&body, &[])).is_ok() {
                        stored.fetch_add(1, Relaxed);
                    }
                    assert!(cache.stats().bytes <= max);
                    assert!(cache.get(&hot[i % hot.len()], &HeaderMap::new()).is_some());
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Relaxed);
    watcher.await.unwrap();

    let stats = cache.stats();
    assert!(stats.bytes <= max);
    assert_eq!(resident(&cache), (stats.bytes, stats.entries));
    assert_eq!(stored.load(Relaxed), TASKS * PER_TASK);
    assert_eq!(stats.inserts, (TASKS * PER_TASK + hot.len()) as u64);
    assert_eq!(stats.inserts - stats.evictions, stats.entries);
    // Full, but not emptied: each insert evicts about what it needs.
    assert!(stats.bytes > max - TASKS as u64 * 400, "{stats:?}");
    for k in &hot {
        assert!(cache.get(k, &HeaderMap::new()).is_some(), "hot key {k:?} evicted");
    }
    for t in 0..TASKS {
        for i in 0..100 {
            assert!(
                cache
                    .get(&key(1, &format!("/cold/{t}/{i}"), None, &[]), &HeaderMap::new())
                    .is_none()
            );
        }
    }
    // The latest inserts across tasks are still there.
    let order = order.lock().unwrap();
    for k in &order[order.len() - 100..] {
        assert!(
            cache.get(k, &HeaderMap::new()).is_some(),
            "recent key {k:?} evicted"
        );
    }
    assert!(cache.ring.len() <= 2 * stats.entries as usize + 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn accounting_stays_exact_under_mixed_inserts_invalidations_and_replacements() {
    let max = 40 * 400;
    let cache = Arc::new(Cache::new(max, 1 << 16));
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                for i in 0..2000u32 {
                    let path = format!("/r/{}", (i * 7 + t) % 60);
                    let lang = if i % 2 == 0 { "en" } else { "fr" };
                    let request = headers(&[("accept-language", lang)]);
                    let k = key(1, &path, Some(&format!("q={}", i % 3)), &[]);
                    match (i + t) % 5 {
                        0 => cache.invalidate(1, &path),
                        1 => {
                            let since = cache.generation(1, &path);
                            let _ = cache.insert_since(
                                since,
                                k,
                                &request,
                                entry("v", &[("vary", "accept-language")]),
                            );
                        }
                        _ => {
                            let _ =
                                cache.insert(k.clone(), &request, entry("b", &[("vary", "accept-language")]));
                            cache.get(&k, &request);
                        }
                    }
                    assert!(cache.stats().bytes <= max);
                    if i % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = cache.stats();
    assert!(stats.bytes <= max);
    assert_eq!(resident(&cache), (stats.bytes, stats.entries));
    for path in 0..60 {
        cache.invalidate(1, &format!("/r/{path}"));
    }
    assert_eq!((cache.stats().bytes, cache.stats().entries), (0, 0));
    assert!(cache.resources.is_empty());
}

#[test]
fn recent_versions_are_kept_by_key_and_tag_within_count_and_bytes() {
    let cache = Cache::with_history(64 * 1024, 1024, 8 * 1024);
    assert_eq!(cache.stats().bytes, 0);
    let alice = key(1, "/d", None, &[Some("alice"), None]);
    let bob = key(1, "/d", None, &[Some("bob"), None]);
    let versions: Vec<Arc<Entry>> = (0..5)
        .map(|i| Arc::new(entry(&format!("{{\"v\":{i}}}"), &[])))
        .collect();
    for v in &versions {
        cache.remember(&alice, v, 3);
        cache.remember(&alice, v, 3); // the newest again: nothing new
    }
    let tag = |i: usize| versions[i].etag();
    assert!(
        cache.version(&alice, &tag(1)).is_none(),
        "only the last 3 are kept"
    );
    for kept in &versions[2..] {
        assert!(
            cache
                .version(&alice, &kept.etag())
                .is_some_and(|v| Arc::ptr_eq(&v, kept))
        );
    }
    assert!(
        cache.version(&bob, &tag(4)).is_none(),
        "another requester's versions are not bob's"
    );
    assert_eq!(cache.history_bytes(), 3 * (ENTRY_OVERHEAD + 7));
    // Never what the cache could not keep.
    let secret = Arc::new(entry("{\"s\":1}", &[("cache-control", "no-store")]));
    cache.remember(&bob, &secret, 3);
    assert!(cache.version(&bob, &secret.etag()).is_none());
    let private = Arc::new(entry("{\"p\":1}", &[("cache-control", "private")]));
    let anonymous = key(1, "/d", None, &[None, None]);
    cache.remember(&anonymous, &private, 3);
    assert!(cache.version(&anonymous, &private.etag()).is_none());
    // The byte bound: the oldest recorded anywhere go first, and it is never exceeded.
    for i in 0..40 {
        let other = key(2, &format!("/{i}"), None, &[None, None]);
        cache.remember(&other, &Arc::new(entry(&format!("{{\"n\":{i}}}"), &[])), 8);
        assert!(cache.history_bytes() <= 8 * 1024);
    }
    assert!(cache.version(&alice, &tag(4)).is_none(), "evicted by bytes");
    let last = key(2, "/39", None, &[None, None]);
    assert!(cache.version(&last, &entry("{\"n\":39}", &[]).etag()).is_some());
}
