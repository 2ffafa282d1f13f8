//! Property tests: [`Config::from_toml`] never panics on arbitrary TOML, every error
//! names the file and a position inside it, and every accepted config keeps the
//! invariants its types promise.
//!
//! The generator writes TOML the way people do, known tables and keys with a mix of valid
//! and invalid values, plus foreign keys, odd value types and a sprinkled syntax slip, so
//! that validation is reached, not only the TOML parser.

use proptest::prelude::*;

use super::*;

/// Values worth trying for every key: valid ones, near misses, wrong types and extremes.
const VALUES: &[&str] = &[
    "\"127.0.0.1:0\"",
    "\"[::1]:8080\"",
    "\"localhost:80\"",
    "\"1MiB\"",
    "\"512KiB\"",
    "\"0\"",
    "\"18446744073709551615GiB\"",
    "\"1.5MiB\"",
    "\"30s\"",
    "\"250ms\"",
    "\"0s\"",
    "\"5m\"",
    "\"99999999999999999h\"",
    "\"-1s\"",
    "\"http://127.0.0.1:1\"",
    "\"https://api.example/base/\"",
    "\"http://user@host\"",
    "\"ftp://x\"",
    "\"http://\"",
    "\"/api/{id}\"",
    "\"/api/{*rest}\"",
    "\"/api/{\"",
    "\"/api/{a}/{a}\"",
    "\"/api\"",
    "\"revalidate\"",
    "\"exclusive\"",
    "\"auto\"",
    "\"hash\"",
    "\"upstream\"",
    "\"PUT\"",
    "\"POST\"",
    "\"GET\"",
    "\"é\\u0000\"",
    "\"\"",
    "'''\nmulti\nline'''",
    "[\"json-patch\", \"merge-patch\"]",
    "[\"json-patch\", \"json-patch\"]",
    "[\"authorization\", \"Bad Header\"]",
    "[]",
    "[[1], [\"a\"]]",
    "{ a = 1 }",
    "0",
    "1",
    "-1",
    "3",
    "101",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "nan",
    "-inf",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "07:32:00",
];

/// Each table with its keys and a valid value for each, so that most files get past the
/// TOML parser and the unknown-key check into validation proper.
const TABLES: &[Table] = &[
    (
        "[server]",
        &[
            ("listen", "\"127.0.0.1:0\""),
            ("max_body_bytes", "\"1MiB\""),
            ("request_timeout", "\"30s\""),
            ("shutdown_grace", "\"250ms\""),
            ("header_read_timeout", "\"10s\""),
            ("body_read_timeout", "\"30s\""),
        ],
    ),
    ("[server.tls]", &[("cert", "\"c.pem\""), ("key", "\"k.pem\"")]),
    ("[admin]", &[("listen", "\"127.0.0.1:0\"")]),
    (
        "[cache]",
        &[
            ("max_bytes", "\"1MiB\""),
            ("max_entry_bytes", "1024"),
            ("key_headers", "[\"authorization\"]"),
        ],
    ),
    ("[[route]]", ROUTE_KEYS),
];

/// Tables that should not be there, or not like this.
const ODD_TABLES: &[Table] = &[
    ("", &[("unknown", "1")]),
    ("[route]", ROUTE_KEYS),
    ("[[server]]", &[("listen", "\"127.0.0.1:0\"")]),
    ("[bogus]", &[("x", "1")]),
    ("[route.extra]", &[("name", "\"x\"")]),
    ("[[route.x]]", ROUTE_KEYS),
];

const ROUTE_KEYS: &[(&str, &str)] = &[
    ("name", "\"people\""),
    ("path", "\"/api/{id}\""),
    ("upstream", "\"http://127.0.0.1:9\""),
    ("strip_prefix", "\"/api\""),
    ("freshness", "\"5s\""),
    ("etag", "\"auto\""),
    ("patch", "[\"json-patch\"]"),
    ("write_method", "\"PUT\""),
    ("require_precondition", "true"),
    ("conflict_retries", "3"),
    ("patch_max_ops", "10"),
    ("refresh_after_write", "false"),
    ("heuristic_freshness", "false"),
    ("batch_patches", "true"),
    ("batch_reads", "true"),
    ("changes", "true"),
    ("ca_file", "\"ca.pem\""),
];

/// Keys that belong nowhere.
const FOREIGN: &[&str] = &["unknown", "\"quoted key\"", "listen", "route", "tls.cert"];

/// Characters that most often turn TOML into something else when slipped in.
const SLIPS: &[char] = &[
    '[', ']', '{', '}', '=', '"', '\'', '\n', '#', '.', ',', '\\', 'é', '\0',
];

type Table = (&'static str, &'static [(&'static str, &'static str)]);

fn section((header, keys): Table) -> impl Strategy<Value = String> {
    {
        let pair = prop_oneof![
            12 => prop::sample::select(keys),
            6 => (prop::sample::select(keys), prop::sample::select(VALUES)).prop_map(|((k, _), v)| (k, v)),
            1 => (prop::sample::select(FOREIGN), prop::sample::select(VALUES)),
        ];
        prop::collection::vec(pair, 0..8).prop_map(move |pairs| {
            let mut text = format!("{header}\n");
            let mut seen = std::collections::BTreeSet::new();
            for (key, value) in pairs {
                if seen.insert(key) {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            text
        })
    }
}

/// A whole file: the usual tables in the usual order, each maybe missing, routes
/// repeated, sometimes an odd table, sometimes one character slipped in somewhere.
fn file() -> impl Strategy<Value = String> {
    let usual: Vec<_> = TABLES
        .iter()
        .map(|table| prop::option::weighted(0.6, section(*table)).boxed())
        .collect();
    (
        usual,
        prop::collection::vec(section(TABLES[TABLES.len() - 1]), 0..3),
        prop::option::weighted(0.2, prop::sample::select(ODD_TABLES).prop_flat_map(section)),
        prop::option::weighted(0.2, (any::<prop::sample::Index>(), prop::sample::select(SLIPS))),
    )
        .prop_map(|(usual, routes, odd, slip)| {
            let mut text: String = usual.into_iter().flatten().chain(routes).chain(odd).collect();
            if let Some((at, c)) = slip {
                let boundaries: Vec<usize> =
                    text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
                text.insert(*at.get(&boundaries), c);
            }
            text
        })
}

/// A config the validator must accept: one to three routes and optional sections, all
/// with valid values.
fn valid_file() -> impl Strategy<Value = String> {
    let route = (
        prop::sample::select(vec!["/api/{id}", "/api/{*rest}", "/x/{a}/y"]),
        prop::sample::select(vec!["revalidate", "exclusive", "5s"]),
        prop::sample::select(vec!["auto", "hash", "upstream"]),
        0u32..=100,
        1usize..5000,
    );
    (
        prop::collection::vec(route, 1..4),
        any::<bool>(),
        prop::option::of((1u64..1 << 30, 1u64..1 << 30)),
    )
        .prop_map(|(routes, admin, cache)| {
            let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
            if admin {
                text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
            }
            if let Some((a, b)) = cache {
                text.push_str(&format!(
                    "[cache]\nmax_bytes = {}\nmax_entry_bytes = {}\n",
                    a.max(b),
                    a.min(b)
                ));
            }
            for (i, (path, freshness, etag, retries, max_ops)) in routes.into_iter().enumerate() {
                text.push_str(&format!(
                    "[[route]]\nname = \"r{i}\"\npath = \"{path}\"\nupstream = \"http://127.0.0.1:9\"\n\
                     freshness = \"{freshness}\"\netag = \"{etag}\"\nconflict_retries = {retries}\n\
                     patch_max_ops = {max_ops}\n"
                ));
            }
            text
        })
}

/// `Ok(None)` for a refused file whose error is well formed.
fn check(src: &str) -> Result<Option<Config>, TestCaseError> {
    match Config::from_toml(src, "x.toml") {
        Ok(config) => {
            prop_assert!(config.server.max_body_bytes > 0);
            prop_assert!(!config.server.request_timeout.is_zero());
            prop_assert!(!config.server.header_read_timeout.is_zero());
            prop_assert!(!config.server.body_read_timeout.is_zero());
            prop_assert!(config.cache.max_entry_bytes <= config.cache.max_bytes);
            prop_assert!(!config.routes.is_empty());
            let mut names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), config.routes.len(), "route names are unique");
            for route in &config.routes {
                prop_assert!(route.conflict_retries <= 100);
                prop_assert!(route.patch_max_ops >= 1);
                prop_assert!(
                    route.upstream.scheme == http::uri::Scheme::HTTP
                        || route.upstream.scheme == http::uri::Scheme::HTTPS
                );
                prop_assert!(!route.upstream.base_path.ends_with('/'));
                prop_assert!(matchit::Router::new().insert(route.path.clone(), ()).is_ok());
                let _ = route.describe();
            }
            Ok(Some(config))
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("x.toml"), "{}", shown);
            prop_assert!(!e.message().is_empty(), "{}", shown);
            if let (Some(line), Some(column)) = (e.line(), e.column()) {
                let lines = src.split('\n').count();
                prop_assert!(
                    line >= 1 && line <= lines,
                    "{} (the file has {} lines)",
                    shown,
                    lines
                );
                let width = src.split('\n').nth(line - 1).map_or(0, |l| l.chars().count());
                prop_assert!(
                    column >= 1 && column <= width + 1,
                    "{} (line {} is {} wide)",
                    shown,
                    line,
                    width
                );
            }
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_toml_never_panics_and_errors_point_inside_the_file(src in file()) {
        check(&src)?;
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,80}|[\\[\\]{}=\"'\n a-z._0-9]{0,80}") {
        check(&src)?;
    }

    #[test]
    fn valid_configs_are_accepted(src in valid_file()) {
        prop_assert!(check(&src)?.is_some(), "{}", src);
    }
}
