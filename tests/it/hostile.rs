//! Hostile input end to end: malformed framing, request smuggling, bad targets, bad
//! headers and bad patch bodies, sent as raw bytes where a client library would refuse.
//! Each row names the exact status; afterwards the upstream has received no write and
//! every document is as it was.

use std::time::Duration;

use crate::support::*;

const DOC: &str = r#"{"id":1,"name":"Ada","tags":["a","b"],"n":1e2}"#;

/// Who answers a row: patchgate itself (problem+json), patchgate with the current
/// representation (an enriched 412), hyper's HTTP/1.1 parser (no body), or the
/// upstream's own answer passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    Problem,
    Representation,
    Parser,
    Upstream,
}

/// (name, request bytes, expected status, who answers)
type Row = (&'static str, Vec<u8>, u16, By);

/// An HTTP/1.1 request with `Host` and `Connection: close`; `Content-Length` is added for
/// a non-empty body unless `extra` already frames it.
fn h1(method_target: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method_target} HTTP/1.1\r\nHost: patchgate.test\r\nConnection: close\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    let framed = extra.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("content-length") || l.starts_with("transfer-encoding")
    });
    if !body.is_empty() && !framed {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Raw bytes, exactly as given.
fn bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const JP: &str = "Content-Type: application/json-patch+json";
const MP: &str = "Content-Type: application/merge-patch+json";

fn rows() -> Vec<Row> {
    let smuggled = b"DELETE /api/doc HTTP/1.1\r\nHost: patchgate.test\r\n\r\n";
    let deep = format!(
        "[{{\"op\":\"add\",\"path\":\"/x\",\"value\":{}{}}}]",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let many_ops = format!(
        "[{}]",
        vec![r#"{"op":"test","path":"/id","value":1}"#; 101].join(",")
    );
    let tags = |n: usize| (0..n).map(|i| format!("\"t{i}\"")).collect::<Vec<_>>().join(", ");
    let if_match_256 = format!("If-Match: {}", tags(256));
    let if_match_257 = format!("If-Match: {}", tags(257));
    let if_match_huge = format!("If-Match: {}", tags(20_000));
    let big_header = format!("X-Big: {}", "a".repeat(600 * 1024));
    let many_headers: Vec<String> = (0..120).map(|i| format!("X-H{i}: {i}")).collect();
    let many_headers: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let long_target = format!("GET /api/{} HTTP/1.1", "a".repeat(70_000));
    let long_path = format!("GET /api/{}", "a".repeat(8_000));
    let op = |o: &str| format!("[{o}]").into_bytes();
    let replace = br#"[{"op":"replace","path":"/name","value":"Eve"}]"#;

    vec![
        // Request smuggling: a DELETE hidden where one parser sees body and another a
        // second request. hyper lets Transfer-Encoding win and closes the connection.
        ("cl_then_te_hides_a_delete", bytes(&[
            b"GET /api/doc HTTP/1.1\r\nHost: patchgate.test\r\nContent-Length: 53\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            smuggled,
        ]), 200, By::Upstream),
        ("te_then_cl_hides_a_delete", bytes(&[
            b"GET /api/doc HTTP/1.1\r\nHost: patchgate.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 53\r\n\r\n0\r\n\r\n",
            smuggled,
        ]), 200, By::Upstream),
        ("cl_and_te_on_a_patch_with_a_bad_chunk", h1("PATCH /api/doc", &[JP, "Content-Length: 5", "Transfer-Encoding: chunked"], b"zz\r\n[]\r\n0\r\n\r\n"), 400, By::Problem),
        ("duplicate_cl_with_different_values", h1("PUT /api/doc", &["Content-Length: 2", "Content-Length: 3"], b"{}x"), 400, By::Parser),
        ("cl_list_with_different_values", h1("PUT /api/doc", &["Content-Length: 2, 3"], b"{}x"), 400, By::Parser),
        ("cl_negative", h1("PUT /api/doc", &["Content-Length: -1"], b"{}"), 400, By::Parser),
        ("cl_with_plus_sign", h1("PUT /api/doc", &["Content-Length: +2"], b"{}"), 400, By::Parser),
        ("cl_in_hex", h1("PUT /api/doc", &["Content-Length: 0x2"], b"{}"), 400, By::Parser),
        ("cl_past_u64", h1("PUT /api/doc", &["Content-Length: 99999999999999999999999"], b"{}"), 400, By::Parser),
        ("cl_obs_folded", h1("PUT /api/doc", &["Content-Length:\r\n 2"], b"{}"), 400, By::Parser),
        ("cl_with_space_before_colon", h1("PUT /api/doc", &["Content-Length : 2"], b"{}"), 400, By::Parser),
        ("te_not_ending_in_chunked", h1("PUT /api/doc", &["Transfer-Encoding: chunked, gzip"], b"2\r\n{}\r\n0\r\n\r\n"), 400, By::Parser),
        ("te_unknown_coding", h1("PUT /api/doc", &["Transfer-Encoding: xchunked"], b"2\r\n{}\r\n0\r\n\r\n"), 400, By::Parser),
        ("te_on_http_1_0", bytes(&[b"PUT /api/doc HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"]), 400, By::Parser),
        ("chunk_size_not_hex", h1("PUT /api/doc", &["Transfer-Encoding: chunked"], b"zz\r\n{}\r\n0\r\n\r\n"), 400, By::Problem),
        ("chunk_size_negative", h1("PUT /api/doc", &["Transfer-Encoding: chunked"], b"-2\r\n{}\r\n0\r\n\r\n"), 400, By::Problem),
        ("chunk_size_overflows_u64", h1("PUT /api/doc", &["Transfer-Encoding: chunked"], b"fffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"), 400, By::Problem),
        ("chunk_data_longer_than_its_size", h1("PUT /api/doc", &["Transfer-Encoding: chunked"], b"2\r\n{}xx\r\n0\r\n\r\n"), 400, By::Problem),
        (
            "chunk_extension_with_a_bare_lf",
            h1("PUT /api/doc", &["Transfer-Encoding: chunked"], b"2;a\n{}\r\n0\r\n\r\n"),
            400,
            By::Problem,
        ),
        ("chunked_body_over_max_body_bytes", h1("PUT /api/doc", &["Transfer-Encoding: chunked"], format!("10000\r\n{}\r\n10000\r\n{}\r\n0\r\n\r\n", "a".repeat(0x10000), "b".repeat(0x10000)).as_bytes()), 413, By::Problem),
        ("cl_over_max_body_bytes", h1("PUT /api/doc", &["Content-Length: 10000000"], b""), 413, By::Problem),
        ("expect_continue_over_max_body_bytes", h1("PATCH /api/doc", &[JP, "Expect: 100-continue", "Content-Length: 10000000"], b""), 413, By::Problem),
        // Malformed heads.
        ("obs_fold_in_a_header", h1("PATCH /api/doc", &[JP, "X-Folded: a\r\n b"], replace), 400, By::Parser),
        ("control_byte_in_a_header_name", h1("PATCH /api/doc", &[JP, "X-\x01: 1"], replace), 400, By::Parser),
        ("nul_in_a_header_value", h1("PATCH /api/doc", &[JP, "X-A: a\0b"], replace), 400, By::Parser),
        ("header_without_colon", h1("PATCH /api/doc", &[JP, "X-No-Colon"], replace), 400, By::Parser),
        ("bare_cr_line_ending", bytes(&[b"DELETE /api/doc HTTP/1.1\rHost: x\r\n\r\n"]), 400, By::Parser),
        ("two_spaces_in_the_request_line", bytes(&[b"DELETE  /api/doc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("lowercase_http_version", bytes(&[b"DELETE /api/doc http/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("unknown_http_version", bytes(&[b"DELETE /api/doc HTTP/1.7\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("control_byte_in_the_method", bytes(&[b"DEL\x01ETE /api/doc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("header_block_over_the_buffer", h1("PATCH /api/doc", &[JP, &big_header], replace), 431, By::Parser),
        ("more_than_100_headers", h1("PATCH /api/doc", &many_headers, replace), 431, By::Parser),
        ("target_over_64k", bytes(&[long_target.as_bytes(), b"\r\nHost: x\r\nConnection: close\r\n\r\n"]), 414, By::Parser),
        ("http_1_1_without_host", bytes(&[b"DELETE /api/doc HTTP/1.1\r\nConnection: close\r\n\r\n"]), 400, By::Problem),
        ("two_host_lines", h1("DELETE /api/doc", &["Host: evil.example"], b""), 400, By::Problem),
        ("host_with_a_space", bytes(&[b"DELETE /api/doc HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"]), 400, By::Problem),
        // Targets.
        ("invalid_utf8_in_the_path", bytes(&[b"DELETE /api/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("control_byte_in_the_path", bytes(&[b"DELETE /api/a\x01b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("nul_in_the_path", bytes(&[b"DELETE /api/a\0b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]), 400, By::Parser),
        ("encoded_nul_in_the_path", h1("DELETE /api/doc%00", &[], b""), 400, By::Problem),
        ("dot_dot_segment", h1("DELETE /api/../api/doc", &[], b""), 400, By::Problem),
        ("encoded_dot_dot_segment", h1("PUT /api/%2e%2e/api/doc", &[], b"{}"), 400, By::Problem),
        ("encoded_slash", h1("PATCH /api/a%2fdoc", &[JP], replace), 400, By::Problem),
        ("encoded_backslash", h1("DELETE /api/a%5cdoc", &[], b""), 400, By::Problem),
        ("bad_percent_escape", h1("DELETE /api/%zzdoc", &[], b""), 400, By::Problem),
        ("absolute_form_with_traversal", h1("DELETE http://evil.example/api/../doc", &[], b""), 400, By::Problem),
        // RFC 9110 §4.2.4: userinfo in the target is an error, never a credential.
        ("absolute_form_with_userinfo", h1("GET http://user:pw@patchgate.test/api/doc", &[], b""), 400, By::Problem),
        ("absolute_form_put_with_userinfo", h1("PUT http://user@patchgate.test/api/doc", &[], b"{}"), 400, By::Problem),
        ("absolute_form_elsewhere_has_no_route", h1("PUT http://127.0.0.1:1/admin/doc", &[], b"{}"), 404, By::Problem),
        ("absolute_form_patch_with_a_bad_patch", h1("PATCH http://evil.example/api/doc", &[JP], b"[{"), 400, By::Problem),
        ("asterisk_form", h1("DELETE *", &[], b""), 400, By::Problem),
        ("authority_form_connect", h1("CONNECT 127.0.0.1:22", &[], b""), 400, By::Problem),
        ("relative_target_without_slash", h1("DELETE api/doc", &[], b""), 400, By::Parser),
        ("long_path_to_a_missing_document", h1(&long_path, &[], b""), 404, By::Upstream),
        // PATCH bodies and media types.
        ("patch_gzip_encoded", h1("PATCH /api/doc", &[JP, "Content-Encoding: gzip"], replace), 415, By::Problem),
        // Methods are case-sensitive; a write method in the wrong case is refused, not forwarded.
        ("lowercase_put", h1("put /api/doc", &["Content-Type: application/json"], br#"{"x":1}"#), 501, By::Problem),
        ("mixed_case_delete", h1("Delete /api/doc", &[], b""), 501, By::Problem),
        ("lowercase_patch", h1("patch /api/doc", &[MP], br#"{"name":"Eve"}"#), 501, By::Problem),
        ("patch_with_unknown_coding", h1("PATCH /api/doc", &[MP, "Content-Encoding: br, identity"], br#"{"name":"Eve"}"#), 415, By::Problem),
        ("patch_as_application_json", h1("PATCH /api/doc", &["Content-Type: application/json"], replace), 415, By::Problem),
        ("patch_without_content_type", h1("PATCH /api/doc", &[], replace), 415, By::Problem),
        ("patch_as_text_plain", h1("PATCH /api/doc", &["Content-Type: text/plain"], replace), 415, By::Problem),
        ("patch_with_two_content_types", h1("PATCH /api/doc", &["Content-Type: text/plain", JP], replace), 415, By::Problem),
        ("patch_not_json", h1("PATCH /api/doc", &[JP], b"replace name with Eve"), 400, By::Problem),
        ("patch_invalid_utf8", h1("PATCH /api/doc", &[MP], b"{\"name\":\"\xff\"}"), 400, By::Problem),
        ("patch_with_a_bom", h1("PATCH /api/doc", &[MP], "\u{feff}{\"name\":\"Eve\"}".as_bytes()), 400, By::Problem),
        ("patch_lone_surrogate", h1("PATCH /api/doc", &[MP], br#"{"name":"\ud800"}"#), 400, By::Problem),
        ("patch_trailing_comma", h1("PATCH /api/doc", &[JP], br#"[{"op":"remove","path":"/n"},]"#), 400, By::Problem),
        ("patch_nan", h1("PATCH /api/doc", &[MP], br#"{"n":NaN}"#), 400, By::Problem),
        ("patch_json_patch_not_an_array", h1("PATCH /api/doc", &[JP], br#"{"op":"remove","path":"/n"}"#), 400, By::Problem),
        ("patch_unknown_op", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"frobnicate","path":"/n"}"#)), 400, By::Problem),
        ("patch_pointer_without_slash", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"remove","path":"n"}"#)), 400, By::Problem),
        ("patch_bad_pointer_escape", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"remove","path":"/~2"}"#)), 400, By::Problem),
        ("patch_value_missing", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"add","path":"/x"}"#)), 400, By::Problem),
        ("merge_patch_duplicate_member", h1("PATCH /api/doc", &[MP], br#"{"name":"Eve","name":"Mallory"}"#), 400, By::Problem),
        ("patch_nested_10k_deep", h1("PATCH /api/doc", &[JP], deep.as_bytes()), 400, By::Problem),
        ("patch_more_ops_than_allowed", h1("PATCH /api/doc", &[JP], many_ops.as_bytes()), 413, By::Problem),
        ("patch_pointer_to_nowhere", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"replace","path":"/a/b/c","value":1}"#)), 422, By::Problem),
        ("patch_index_past_the_end", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"add","path":"/tags/3","value":"c"}"#)), 422, By::Problem),
        ("patch_index_with_leading_zero", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"remove","path":"/tags/01"}"#)), 422, By::Problem),
        ("patch_remove_the_root", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"remove","path":""}"#)), 422, By::Problem),
        ("patch_move_into_its_own_child", h1("PATCH /api/doc", &[JP], &op(r#"{"op":"move","from":"/tags","path":"/tags/0"}"#)), 422, By::Problem),
        ("patch_failed_test_after_a_change", h1("PATCH /api/doc", &[JP], br#"[{"op":"remove","path":"/n"},{"op":"test","path":"/id","value":2}]"#), 409, By::Problem),
        ("patch_of_a_missing_document", h1("PATCH /api/missing", &[JP], replace), 404, By::Upstream),
        // Preconditions.
        ("if_match_unterminated", h1("PATCH /api/doc", &[JP, "If-Match: \"abc"], replace), 412, By::Representation),
        ("if_match_weak", h1("DELETE /api/doc", &["If-Match: W/\"abc\""], b""), 412, By::Representation),
        ("if_match_256_stale_tags", h1("PATCH /api/doc", &[JP, &if_match_256], replace), 412, By::Representation),
        ("if_match_257_tags", h1("PUT /api/doc", &[&if_match_257], b"{}"), 412, By::Representation),
        ("if_match_20k_tags", h1("PATCH /api/doc", &[JP, &if_match_huge], replace), 412, By::Representation),
        ("if_match_star_mixed_with_a_tag", h1("PUT /api/doc", &["If-Match: *, \"x\""], b"{}"), 412, By::Representation),
        ("if_none_match_star_on_an_existing_document", h1("PUT /api/doc", &["If-None-Match: *"], b"{}"), 412, By::Representation),
        ("if_none_match_malformed_on_a_write", h1("DELETE /api/doc", &["If-None-Match: abc"], b""), 412, By::Representation),
        ("if_unmodified_since_without_last_modified", h1("DELETE /api/doc", &["If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT"], b""), 412, By::Representation),
        ("if_match_on_a_missing_document", h1("PUT /api/missing", &["If-Match: \"x\""], b"{}"), 412, By::Problem),
    ]
}

/// Every `HTTP/1.x NNN` status line at the start of a line: one per response.
fn responses(raw: &[u8]) -> usize {
    raw.split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 "))
        .count()
}

#[tokio::test]
async fn hostile_requests_get_exact_statuses_and_never_reach_the_upstream_as_writes() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/doc", DOC);
    upstream.set_doc("/api/other", r#"{"x":1}"#);
    let proxy = TestProxy::in_front_of(&upstream, "patch_max_ops = 100").await;
    let rows = rows();
    assert!(rows.len() >= 50, "{} rows", rows.len());

    let mut wrong = Vec::new();
    for (name, request, status, by) in &rows {
        let response = raw(proxy.addr, request, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&response);
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let problem = head.contains("content-type: application/problem+json");
        let ok = raw_status(&response) == Some(*status)
            && responses(&response) == 1
            && match by {
                By::Problem => problem && text.contains(&format!("\"status\":{status}")),
                By::Representation => head.contains("content-type: application/json") && text.ends_with(DOC),
                By::Parser => !problem && head.contains("content-length: 0"),
                By::Upstream => !problem,
            };
        if !ok {
            wrong.push(format!(
                "{name}: expected {status} {by:?}, got {:?} ({} responses): {}",
                raw_status(&response),
                responses(&response),
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    assert!(
        upstream.writes().is_empty(),
        "writes reached the upstream: {:?}",
        upstream.writes()
    );
    assert_eq!(upstream.doc("/api/doc").unwrap(), DOC);
    assert_eq!(upstream.doc("/api/other").unwrap(), r#"{"x":1}"#);
    assert_eq!(upstream.doc("/api/missing"), None);
    // Still serving, and nothing hostile was cached.
    let got = get(proxy.addr, "/api/doc").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, DOC));
}
