//! `proxy.toml` parsing and validation: the input as UTF-8 text.
//!
//! Checks: no panic; an error names the file and, when it has a position, one inside the
//! text; an accepted config keeps the invariants its types promise, and its routes
//! compile into a route table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchgate::Config;
use patchgate::route::RouteTable;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(src, "fuzz.toml") {
        Ok(config) => {
            assert!(config.server.max_body_bytes > 0);
            assert!(config.cache.max_entry_bytes <= config.cache.max_bytes);
            assert!(!config.routes.is_empty());
            let table = RouteTable::new(&config.routes);
            assert_eq!(table.iter().count(), config.routes.len(), "every route compiles");
            for route in &config.routes {
                let _ = route.describe();
                let _ = table.find(&route.path);
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.toml"), "{shown}");
            if let (Some(line), Some(column)) = (e.line(), e.column()) {
                let text = src
                    .split('\n')
                    .nth(line - 1)
                    .unwrap_or_else(|| panic!("line {line} is past the end: {shown}"));
                assert!(
                    column >= 1 && column <= text.chars().count() + 1,
                    "column past the line: {shown}"
                );
            }
        }
    }
});
