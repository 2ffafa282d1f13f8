//! Shared by the benches: realistic JSON documents of a target size.
//!
//! A document is an object with scalar members first (`id`, `name`, `version`, `n`,
//! `active`), a nested `meta` object, and an `items` array of objects that themselves
//! hold strings, integers, decimals in several spellings and small nested arrays. Items
//! are added until the document reaches the target size, so every size has the same
//! shape. Deterministic: the same size gives the same bytes.

/// A compact JSON document of `size` bytes or a little more (at most one item more).
pub fn document(size: usize) -> Vec<u8> {
    let mut out = String::with_capacity(size + 512);
    out.push_str(
        r#"{"id":"7f3a9c2e-1b4d-4e8f-9a6b-2c5d8e1f4a7b","name":"Ada Lovelace","version":3,"n":0,"active":true,"#,
    );
    out.push_str(
        r#""meta":{"created":"2024-05-01T12:00:00Z","owner":{"id":42,"team":"analytics"},"labels":["alpha","beta"],"ratio":0.1000,"limit":1e3},"#,
    );
    out.push_str(r#""items":["#);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut i = 0;
    // The closing `]}` is two bytes.
    while out.len() + 2 < size || i == 0 {
        if i > 0 {
            out.push(',');
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = seed >> 33;
        out.push_str(&format!(
            r#"{{"sku":"SKU-{:06}","qty":{},"price":{}.{:02},"weight":{}e-1,"tags":["{}","{}"],"dims":[{},{},{}],"note":"item {} of the order, handled by \"{}\""}}"#,
            r % 1_000_000,
            r % 17,
            r % 500,
            r % 100,
            r % 90 + 10,
            WORDS[(r % 7) as usize],
            WORDS[(r / 7 % 7) as usize],
            r % 30,
            r / 30 % 30,
            r / 900 % 30,
            i,
            WORDS[(r / 49 % 7) as usize],
        ));
        i += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

const WORDS: [&str; 7] = ["red", "green", "blue", "fragile", "bulk", "express", "returned"];

/// "1KiB", "16KiB", "256KiB" for 1024, 16384, 262144.
pub fn size_label(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}
