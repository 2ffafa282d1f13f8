use super::*;

/// Four lines; whatever a case appends starts on line 5.
const ROUTE: &str = "[[route]]\nname = \"a\"\npath = \"/a/{id}\"\nupstream = \"http://127.0.0.1:3000\"\n";

fn error(src: &str) -> ConfigError {
    match Config::from_toml(src, "proxy.toml") {
        Ok(config) => panic!("accepted {src:?} as {config:?}"),
        Err(e) => e,
    }
}

/// `(toml, key, line, column, words the message must contain)`
fn assert_errors(cases: &[(&str, &str, usize, usize, &str)]) {
    for (src, key, line, column, words) in cases {
        let e = error(src);
        assert_eq!(
            (e.key(), e.line(), e.column()),
            (*key, Some(*line), Some(*column)),
            "{src:?}: {e}"
        );
        assert!(e.message().contains(words), "{src:?}: {e}");
        assert_eq!(
            e.to_string(),
            format!("proxy.toml:{line}:{column}: {key}: {}", e.message())
        );
    }
}

fn with_route(extra: &str) -> String {
    format!("{ROUTE}{extra}")
}

#[test]
fn unknown_freshness_reads_exactly_as_documented() {
    let src = format!(
        "# comment\n[server]\nlisten = \"127.0.0.1:0\"\n\n{ROUTE}\n[[route]]\nname = \"b\"\npath = \"/b\"\nupstream = \"http://127.0.0.1:1\"\nfreshness = \"sometimes\"\n"
    );
    assert_eq!(
        error(&src).to_string(),
        "proxy.toml:14:13: route[1].freshness: expected \"revalidate\", \"exclusive\", \"http\" or a duration such as \"5s\", found \"sometimes\""
    );
}

#[test]
fn unknown_keys_are_named_at_the_key_with_the_allowed_keys() {
    let root = format!("bogus = 1\n{ROUTE}");
    let second =
        format!("{ROUTE}\n[[route]]\nname = \"b\"\npath = \"/b\"\nupstream = \"http://h\"\nbogus = true\n");
    let inline = "route = [{ name = \"a\", path = \"/a\", upstream = \"http://h\", tag = 1 }]\n";
    assert_errors(&[
        (
            &root,
            "bogus",
            1,
            1,
            "unknown key `bogus`; allowed keys here are `server`, `admin`, `cache`, `route`",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n",
            "server.lisen",
            3,
            1,
            "unknown key `lisen`",
        ),
        (
            "[server.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"\n",
            "server.tls.ca",
            4,
            1,
            "`cert`, `key`",
        ),
        (
            "[admin]\n  port = 9901\n",
            "admin.port",
            2,
            3,
            "the only allowed key here is `listen`",
        ),
        (
            "[cache]\nmax = 1\n",
            "cache.max",
            2,
            1,
            "`max_bytes`, `max_entry_bytes`, `key_headers`",
        ),
        (&second, "route[1].bogus", 10, 1, "unknown key `bogus`"),
        (inline, "route[0].tag", 1, 60, "unknown key `tag`"),
        (
            "[server]\n\"odd.key\" = 1\n",
            "server.\"odd.key\"",
            2,
            1,
            "unknown key `odd.key`",
        ),
    ]);
}

#[test]
fn wrong_types_are_named_at_the_value() {
    assert_errors(&[
        (
            "[server]\nlisten = 8080\n",
            "server.listen",
            2,
            10,
            "invalid type: integer `8080`, expected a string",
        ),
        ("server = 5\n", "server", 1, 10, "expected a table"),
        (
            "[server]\nrequest_timeout = 30\n",
            "server.request_timeout",
            2,
            19,
            "with a unit, such as \"30s\"",
        ),
        (
            "[server]\nmax_body_bytes = true\n",
            "server.max_body_bytes",
            2,
            18,
            "a size such as \"1MiB\"",
        ),
        (
            "[cache]\nkey_headers = \"cookie\"\n",
            "cache.key_headers",
            2,
            15,
            "expected an array",
        ),
        (
            "[cache]\nkey_headers = [\"a\", 1]\n",
            "cache.key_headers[1]",
            2,
            21,
            "expected a string",
        ),
        (
            &with_route("conflict_retries = \"3\"\n"),
            "route[0].conflict_retries",
            5,
            20,
            "expected an integer",
        ),
        (
            &with_route("require_precondition = \"yes\"\n"),
            "route[0].require_precondition",
            5,
            24,
            "expected a boolean",
        ),
        ("route = 5\n", "route", 1, 9, "expected an array"),
    ]);
}

#[test]
fn toml_syntax_errors_have_a_position() {
    let e = error("[server\nlisten = 1\n");
    assert_eq!((e.line(), e.column()), (Some(1), Some(8)), "{e}");
    assert!(e.message().starts_with("invalid TOML: "), "{e}");
    let e = error("[server]\nlisten = \"127.0.0.1:80\nx = 1\n");
    assert_eq!((e.key(), e.line()), ("server.listen", Some(2)), "{e}");
    let e = error("[server]\nlisten = \"a\"\nlisten = \"b\"\n");
    assert_eq!(e.line(), Some(3), "{e}");
    assert!(e.message().contains("duplicate"), "{e}");
}

#[test]
fn missing_routes_and_required_keys_are_reported() {
    let e = error("[server]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(
        e.to_string(),
        "proxy.toml: route: no routes configured; add at least one [[route]] table with name, path and upstream"
    );
    assert_errors(&[
        ("route = []\n", "route", 1, 9, "no routes configured"),
        (
            "\n[[route]]\npath = \"/a\"\nupstream = \"http://h\"\n",
            "route[0].name",
            2,
            1,
            "missing; add name =",
        ),
        (
            "[[route]]\nname = \"a\"\nupstream = \"http://h\"\n",
            "route[0].path",
            1,
            1,
            "missing; add path =",
        ),
        (
            "[[route]]\nname = \"a\"\npath = \"/a\"\n",
            "route[0].upstream",
            1,
            1,
            "missing; add upstream =",
        ),
        (
            "[server.tls]\ncert = \"c\"\n",
            "server.tls.key",
            1,
            1,
            "needs both `cert` and `key`",
        ),
        (
            "[server]\ntls = { key = \"k\" }\n",
            "server.tls.cert",
            2,
            7,
            "needs both",
        ),
        ("[admin]\n", "admin.listen", 1, 1, "missing; add listen ="),
        (
            "[server.tls]\ncert = \"\"\nkey = \"k\"\n",
            "server.tls.cert",
            2,
            8,
            "must not be empty",
        ),
    ]);
}

#[test]
fn duplicate_route_names_point_at_the_second() {
    let src = format!("{ROUTE}\n[[route]]\nname = \"a\"\npath = \"/b\"\nupstream = \"http://h\"\n");
    assert_errors(&[
        (
            &src,
            "route[1].name",
            7,
            8,
            "route name \"a\" is already used by route[0] (line 2)",
        ),
        (
            "[[route]]\nname = \"a b\"\n",
            "route[0].name",
            2,
            8,
            "not a valid route name",
        ),
        (
            "[[route]]\nname = \"\"\n",
            "route[0].name",
            2,
            8,
            "not a valid route name",
        ),
    ]);
}

#[test]
fn bad_upstream_urls_are_rejected() {
    let case = |url: &str| format!("[[route]]\nname = \"a\"\npath = \"/a\"\nupstream = \"{url}\"\n");
    for (url, words) in [
        ("ftp://h", "unsupported scheme \"ftp\""),
        ("127.0.0.1:3000", "not an absolute URL"),
        ("/api", "not an absolute URL"),
        ("http://", "not a valid URL"),
        ("not a url", "not a valid URL"),
        ("http://user:pw@h", "user info"),
        ("http://h/api?x=1", "?query"),
        ("http://h/?", "?query"),
        ("http://h/#top", "#fragment"),
        ("http://h:99999", "invalid port"),
        ("http://h:", "invalid port"),
        ("http://h:0", "invalid port"),
        ("http://:80", "has no host"),
    ] {
        assert_errors(&[(&case(url), "route[0].upstream", 4, 12, words)]);
    }
}

#[test]
fn bad_path_templates_are_rejected() {
    let case = |path: &str| format!("[[route]]\nname = \"a\"\npath = \"{path}\"\nupstream = \"http://h\"\n");
    for (path, words) in [
        ("a/{id}", "must start with '/'"),
        ("", "must start with '/'"),
        ("/a/{id", "not a valid path template"),
        ("/a/{}", "needs a name"),
        ("/{*rest}/x", "only allowed as the last segment"),
        ("/{a}{b}", "only one {parameter}"),
        ("/a?x", "may not contain '?'"),
        ("/a b", "spaces"),
    ] {
        assert_errors(&[(&case(path), "route[0].path", 3, 8, words)]);
    }
}

#[test]
fn bad_sizes_and_durations_are_rejected() {
    assert_errors(&[
        (
            "[server]\nmax_body_bytes = \"lots\"\n",
            "server.max_body_bytes",
            2,
            18,
            "expected a size",
        ),
        (
            "[server]\nmax_body_bytes = -1\n",
            "server.max_body_bytes",
            2,
            18,
            "cannot be negative",
        ),
        (
            "[server]\nmax_body_bytes = 0\n",
            "server.max_body_bytes",
            2,
            18,
            "greater than zero",
        ),
        (
            "[server]\nmax_body_bytes = \"1.5MiB\"\n",
            "server.max_body_bytes",
            2,
            18,
            "fractions",
        ),
        (
            "[cache]\nmax_bytes = \"99999999TiB\"\n",
            "cache.max_bytes",
            2,
            13,
            "too large",
        ),
        (
            "[server]\nrequest_timeout = \"soon\"\n",
            "server.request_timeout",
            2,
            19,
            "expected a duration",
        ),
        (
            "[server]\nrequest_timeout = \"0s\"\n",
            "server.request_timeout",
            2,
            19,
            "greater than zero",
        ),
        (
            "[server]\nheader_read_timeout = \"0ms\"\n",
            "server.header_read_timeout",
            2,
            23,
            "greater than zero",
        ),
        (
            "[server]\nbody_read_timeout = \"0s\"\n",
            "server.body_read_timeout",
            2,
            21,
            "greater than zero",
        ),
        (
            "[server]\nrequest_timeout = \"10s\"\nwrite_timeout = \"5s\"\n",
            "server.write_timeout",
            3,
            17,
            "shorter than server.request_timeout",
        ),
        (
            "[server]\nwrite_timeout = \"soon\"\n",
            "server.write_timeout",
            2,
            17,
            "duration",
        ),
        (
            "[server]\nbody_read_timeout = 30\n",
            "server.body_read_timeout",
            2,
            21,
            "duration",
        ),
        (
            "[server]\nshutdown_grace = \"-1s\"\n",
            "server.shutdown_grace",
            2,
            18,
            "cannot be negative",
        ),
        (
            &with_route("freshness = \"5d\"\n"),
            "route[0].freshness",
            5,
            13,
            "unknown duration unit \"d\"",
        ),
        (
            &with_route("freshness = \"0s\"\n"),
            "route[0].freshness",
            5,
            13,
            "write \"revalidate\"",
        ),
    ]);
}

#[test]
fn heuristic_freshness_needs_http_freshness() {
    assert_errors(&[(
        &with_route("freshness = \"5s\"\nheuristic_freshness = true\n"),
        "route[0].heuristic_freshness",
        6,
        23,
        "only applies to freshness = \"http\"",
    )]);
    let config = Config::from_toml(
        &with_route("freshness = \"http\"\nheuristic_freshness = true\n"),
        "proxy.toml",
    )
    .unwrap();
    let route = &config.routes[0];
    assert_eq!(route.freshness, Freshness::Http);
    assert!(route.heuristic_freshness);
    // Off says nothing wrong, whatever the freshness.
    let config = Config::from_toml(&with_route("heuristic_freshness = false\n"), "proxy.toml").unwrap();
    assert!(!config.routes[0].heuristic_freshness);
}

#[test]
fn unknown_enumerated_values_list_the_allowed_ones() {
    assert_errors(&[
        (
            &with_route("etag = \"strong\"\n"),
            "route[0].etag",
            5,
            8,
            "expected \"auto\", \"upstream\" or \"hash\", found \"strong\"",
        ),
        (
            &with_route("patch = [\"json-patch\", \"xml\"]\n"),
            "route[0].patch[1]",
            5,
            24,
            "expected \"json-patch\" or \"merge-patch\", found \"xml\"",
        ),
        (
            &with_route("patch = [\"merge-patch\", \"merge-patch\"]\n"),
            "route[0].patch[1]",
            5,
            25,
            "listed twice",
        ),
        (
            &with_route("write_method = \"PATCH\"\n"),
            "route[0].write_method",
            5,
            16,
            "expected \"PUT\" or \"POST\"",
        ),
        (
            &with_route("write_method = \"put\"\n"),
            "route[0].write_method",
            5,
            16,
            "(upper case)",
        ),
    ]);
}

#[test]
fn cross_key_and_range_checks_name_the_key() {
    assert_errors(&[
        (
            "[cache]\nmax_bytes = \"1MiB\"\nmax_entry_bytes = \"2MiB\"\n",
            "cache.max_entry_bytes",
            3,
            19,
            "cache.max_entry_bytes (2MiB) must not exceed cache.max_bytes (1MiB)",
        ),
        (
            "[cache]\nmax_bytes = \"1MiB\"\n",
            "cache.max_bytes",
            2,
            13,
            "(8MiB) must not exceed",
        ),
        (
            "[cache]\nkey_headers = [\"cookie\", \"x y\"]\n",
            "cache.key_headers[1]",
            2,
            26,
            "\"x y\" is not a valid header name",
        ),
        (
            "[admin]\nlisten = \"localhost:9901\"\n",
            "admin.listen",
            2,
            10,
            "host names are not resolved",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n",
            "admin.listen",
            4,
            10,
            "already server.listen",
        ),
        (
            &with_route("strip_prefix = \"/b\"\n"),
            "route[0].strip_prefix",
            5,
            16,
            "not a leading part of the route path \"/a/{id}\"",
        ),
        (
            &with_route("strip_prefix = \"/a/\"\n"),
            "route[0].strip_prefix",
            5,
            16,
            "not end with '/'",
        ),
        (
            &with_route("strip_prefix = \"/\"\n"),
            "route[0].strip_prefix",
            5,
            16,
            "not end with '/'",
        ),
        (
            &with_route("strip_prefix = \"/a/{id}\"\n"),
            "route[0].strip_prefix",
            5,
            16,
            "must be literal",
        ),
        (
            &with_route("ca_file = \"ca.pem\"\n"),
            "route[0].ca_file",
            5,
            11,
            "only applies to an https upstream",
        ),
        (
            &with_route("conflict_retries = 101\n"),
            "route[0].conflict_retries",
            5,
            20,
            "between 0 and 100, found 101",
        ),
        (
            &with_route("conflict_retries = -1\n"),
            "route[0].conflict_retries",
            5,
            20,
            "between 0 and 100",
        ),
        (
            &with_route("patch_max_ops = 0\n"),
            "route[0].patch_max_ops",
            5,
            17,
            "at least 1, found 0",
        ),
    ]);
}

#[test]
fn strip_prefix_must_end_at_a_segment_boundary() {
    let src =
        "[[route]]\nname = \"a\"\npath = \"/apix/{id}\"\nupstream = \"http://h\"\nstrip_prefix = \"/api\"\n";
    assert_errors(&[(src, "route[0].strip_prefix", 5, 16, "whole segments")]);
    let src = "[[route]]\nname = \"a\"\npath = \"/api\"\nupstream = \"http://h\"\nstrip_prefix = \"/api\"\n";
    assert_eq!(
        Config::from_toml(src, "p").unwrap().routes[0]
            .strip_prefix
            .as_deref(),
        Some("/api")
    );
}

#[test]
fn hostile_input_never_panics() {
    let deep_arrays = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_tables = format!("a = {}{}", "{ b = ".repeat(5_000), "}".repeat(5_000));
    let dotted = format!("[{}]\n", vec!["k"; 5_000].join("."));
    let many_routes = "[[route]]\n".repeat(2_000);
    let hostile = [
        "",
        "\u{feff}",
        "\0",
        "[[[",
        "= = =",
        "[server]\nlisten = \"\u{202e}\"\n",
        "route = [1, 2, 3]\n",
        "route = [[]]\n",
        "[[route]]\nname = \"é\"\n",
        "[[route]]\nupstream = \"http://[::1\"\n",
        "[[route]]\nname = \"a\"\npath = \"/a\"\nupstream = \"http://h:65536\"\n",
        "[cache]\nmax_bytes = 9223372036854775807\nmax_entry_bytes = -9223372036854775808\n",
        "[server]\nrequest_timeout = \"18446744073709551616ms\"\n",
        "[server]\nmax_body_bytes = 1e999\n",
        "x = 1979-05-27T07:32:00Z\n",
        &deep_arrays,
        &deep_tables,
        &dotted,
        &many_routes,
    ];
    for src in hostile {
        let e = error(src);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn cluster_is_read_with_its_defaults_and_never_prints_its_password() {
    let src = with_route("[cluster]\nredis = \"redis://:s3cret@10.0.0.5:6380/2\"\n");
    let config = Config::from_toml(&src, "proxy.toml").unwrap_or_else(|e| panic!("{e}"));
    let cluster = config.cluster.unwrap_or_else(|| panic!("no [cluster]"));
    assert_eq!(cluster.key_prefix, "patchgate:");
    assert_eq!(
        cluster.lease,
        config.server.write_timeout + std::time::Duration::from_secs(5)
    );
    assert_eq!(cluster.timeout, std::time::Duration::from_secs(1));
    assert_eq!(cluster.lease_poll, std::time::Duration::from_millis(250));
    assert_eq!(cluster.redacted(), "redis://10.0.0.5:6380/2");
    assert!(!format!("{cluster:?}").contains("s3cret"), "{cluster:?}");
    let absent = Config::from_toml(ROUTE, "proxy.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(absent.cluster.is_none());
}

#[test]
fn cluster_mistakes_name_the_key() {
    let short = format!(
        "[server]\nwrite_timeout = \"60s\"\n{ROUTE}[cluster]\nredis = \"redis://h\"\nlease = \"60s\"\n"
    );
    assert_errors(&[
        (
            &with_route("[cluster]\nkey_prefix = \"x\"\n"),
            "cluster.redis",
            5,
            1,
            "missing; add redis = ",
        ),
        (
            &with_route("[cluster]\nredis = \"http://h:1\"\n"),
            "cluster.redis",
            6,
            9,
            "not a Redis URL",
        ),
        (
            &short,
            "cluster.lease",
            9,
            9,
            "not longer than server.write_timeout",
        ),
        (
            &with_route("[cluster]\nredis = \"redis://h\"\nca_file = \"ca.pem\"\n"),
            "cluster.ca_file",
            7,
            11,
            "only TLS URLs",
        ),
        (
            &with_route("[cluster]\nredis = \"redis://h\"\ntimeout = \"0s\"\n"),
            "cluster.timeout",
            7,
            11,
            "",
        ),
        (
            &with_route("[cluster]\nredis = \"redis://h\"\npassword_env = \"A=B\"\n"),
            "cluster.password_env",
            7,
            16,
            "not an environment variable name",
        ),
    ]);
}

#[test]
fn cluster_takes_one_kind_of_server() {
    let nodes = with_route(
        "[cluster]\ncluster_nodes = [\"rediss://a:7000\", \"rediss://b:7000\"]\nca_file = \"ca.pem\"\n",
    );
    let config = Config::from_toml(&nodes, "proxy.toml").unwrap_or_else(|e| panic!("{e}"));
    let cluster = config.cluster.unwrap_or_else(|| panic!("no [cluster]"));
    assert_eq!(cluster.nodes.as_deref().map(<[String]>::len), Some(2));
    assert!(cluster.redis.is_none() && cluster.sentinel.is_none());
    assert_eq!(
        cluster.redacted(),
        "redis cluster via rediss://a:7000, rediss://b:7000"
    );
    assert_errors(&[
        (
            &with_route("[cluster]\nredis = \"redis://h\"\ncluster_nodes = [\"redis://a:7000\"]\n"),
            "cluster.redis",
            5,
            1,
            "give one of redis",
        ),
        (
            &with_route("[cluster]\ncluster_nodes = [\"redis://a:7000\", \"rediss://b:7000\"]\n"),
            "cluster.cluster_nodes",
            6,
            17,
            "all with TLS or all without",
        ),
        (
            &with_route("[cluster]\nsentinels = [\"redis://s:26379\"]\n"),
            "cluster.sentinel_master",
            6,
            13,
            "missing",
        ),
        (
            &with_route("[cluster]\ncluster_nodes = [\"http://a:7000\"]\n"),
            "cluster.cluster_nodes[0]",
            6,
            18,
            "not a Redis URL",
        ),
    ]);
}
