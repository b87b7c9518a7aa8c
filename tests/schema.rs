//! One definition of each fact: the option schema (`core::config::OPTIONS`), the error codes
//! (`ErrorCode::ALL`) and the batch flags (`crossing`) are the sources; the TypeScript types,
//! the README, the JavaScript host and the demo page are checked against them here.
//!
//! When a check fails it prints the text to paste (e.g. the README's option table rows).

use std::collections::BTreeSet;
use std::fs;

use livestream_wasm::core::config::{option_spec, Kind, OPTIONS};
use livestream_wasm::core::record::ID_FIELDS;
use livestream_wasm::core::ErrorCode;
use livestream_wasm::crossing::{HAS_HIT_ID, HAS_VIS_ID, LAYOUT_WORDS, NOT_IN_CHUNK};

fn read(path: &str) -> String {
    fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The body of `interface NAME { … }` in a .d.ts.
fn interface_body<'a>(dts: &'a str, name: &str) -> &'a str {
    let start = dts
        .find(&format!("interface {name} {{"))
        .unwrap_or_else(|| panic!("no interface {name}"));
    let rest = &dts[start..];
    let end = rest.find("\n}").expect("interface end");
    &rest[..end]
}

/// Property names declared at the top level of an interface body (`  name?: …;`).
fn property_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| {
            let l = l.strip_prefix("  ")?;
            if l.starts_with(' ') || l.starts_with('/') || l.starts_with('*') || l.starts_with('[')
            {
                return None;
            }
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && l[name.len()..].trim_start().starts_with(['?', ':']))
                .then_some(name)
        })
        .collect()
}

/// The string literals of `const NAME = [ … ];` in a JavaScript file.
fn js_string_array(js: &str, name: &str) -> BTreeSet<String> {
    let start = js
        .find(&format!("const {name} = ["))
        .unwrap_or_else(|| panic!("no const {name}"));
    let rest = &js[start..];
    let end = rest.find("];").expect("array end");
    rest[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn core_names() -> BTreeSet<String> {
    OPTIONS.iter().map(|o| o.name.to_string()).collect()
}

#[test]
fn typescript_options_are_the_schema_plus_the_host_options() {
    let dts = read("js/index.d.ts");
    let declared = property_names(interface_body(&dts, "LiveStreamOptions"));
    let host = js_string_array(&read("js/live-stream.js"), "HOST_OPTIONS");
    let mut expected = core_names();
    expected.extend(host.iter().cloned());
    // Callbacks and fetch are host options too; `token` is in both (the host calls it).
    assert_eq!(
        declared, expected,
        "LiveStreamOptions in js/index.d.ts must declare exactly the core's OPTIONS and the host's HOST_OPTIONS"
    );
    for name in &host {
        assert!(
            !core_names().contains(name),
            "{name} is both a core and a host option"
        );
    }
}

/// The README's option table rows for the core's options, generated from the schema.
fn readme_rows() -> Vec<String> {
    OPTIONS
        .iter()
        .map(|o| {
            format!(
                "| `{}` | {} | {} | {} |",
                o.name,
                o.default,
                o.expected(),
                o.meaning
            )
        })
        .collect()
}

#[test]
fn readme_option_table_is_generated_from_the_schema() {
    let readme = read("README.md");
    let rows = readme_rows();
    let missing: Vec<&String> = rows
        .iter()
        .filter(|r| !readme.contains(r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's option table is out of date; these rows (from src/core/config.rs OPTIONS) are missing:\n{}\n\nThe whole table:\n| option | default | allowed | meaning |\n|---|---|---|---|\n{}",
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
        rows.join("\n")
    );
    for host in js_string_array(&read("js/live-stream.js"), "HOST_OPTIONS") {
        assert!(
            readme.contains(&format!("| `{host}")),
            "README.md documents no host option {host}"
        );
    }
}

#[test]
fn error_codes_agree_everywhere() {
    let codes: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    let dts = read("js/index.d.ts");
    let start = dts
        .find("export type ErrorCode =")
        .expect("ErrorCode union");
    let end = start + dts[start..].find(';').expect("union end");
    let union: BTreeSet<String> = dts[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert_eq!(union, codes, "the ErrorCode union in js/index.d.ts");
    let readme = read("README.md");
    for code in &codes {
        assert!(
            readme.contains(&format!("`{code}`")),
            "README.md does not mention the error code {code}"
        );
    }
    // The codes the JavaScript host raises itself are the core's names.
    let host = read("js/live-stream.js");
    for line in host
        .lines()
        .filter(|l| l.contains("_ERROR = \"") || l.contains("OVERFLOW = \""))
    {
        let code = line.split('"').nth(1).expect("a quoted code");
        assert!(
            codes.contains(code),
            "js/live-stream.js raises {code}, which ErrorCode::ALL lacks"
        );
    }
}

#[test]
fn batch_constants_agree_with_the_javascript_host() {
    let js = read("js/hit-batch.js");
    assert!(
        js.contains(&format!("const HAS_HIT_ID = {HAS_HIT_ID};")),
        "js/hit-batch.js HAS_HIT_ID must equal crossing::HAS_HIT_ID ({HAS_HIT_ID})"
    );
    assert!(
        js.contains(&format!("export const NOT_IN_CHUNK = {NOT_IN_CHUNK:#x};")),
        "js/hit-batch.js NOT_IN_CHUNK must equal crossing::NOT_IN_CHUNK ({NOT_IN_CHUNK:#x})"
    );
    let host = read("js/live-stream.js");
    assert!(
        host.contains(&format!("const LAYOUT_WORDS = {LAYOUT_WORDS};")),
        "js/live-stream.js LAYOUT_WORDS must equal crossing::LAYOUT_WORDS ({LAYOUT_WORDS})"
    );
    let dts = read("js/index.d.ts");
    assert!(
        dts.contains(&format!(
            "bit {HAS_HIT_ID} = has a hit id, bit {HAS_VIS_ID} = has a visitor id"
        )),
        "the flags doc in js/index.d.ts must name bits {HAS_HIT_ID} and {HAS_VIS_ID}"
    );
}

#[test]
fn the_demo_form_takes_its_options_from_the_schema() {
    let settings = read("www/settings.js");
    assert!(
        settings.contains("optionSchema"),
        "www/settings.js must read defaults and ranges from the package's optionSchema()"
    );
    // Every numeric field of the form is an option of the schema.
    for line in settings.lines().filter(|l| l.contains("type: \"int\"")) {
        let key = line.split('"').nth(1).expect("a key");
        assert!(
            core_names().contains(key),
            "the demo form has {key}, not in OPTIONS"
        );
    }
}

/// `1234567` as the README writes numbers: `1 234 567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The value of `const NAME = 10_000;` in a JavaScript file.
fn js_integer(js: &str, name: &str) -> u64 {
    let pattern = format!("const {name} = ");
    let start = js
        .find(&pattern)
        .unwrap_or_else(|| panic!("no const {name}"))
        + pattern.len();
    let digits: String = js[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '_')
        .filter(|c| *c != '_')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("const {name} is not an integer"))
}

#[test]
fn the_hosts_own_defaults_agree_with_its_docs() {
    let host = read("js/live-stream.js");
    let default = js_integer(&host, "DEFAULT_MAX_BUFFERED_HITS");
    let max = js_integer(&host, "MAX_MAX_BUFFERED_HITS");
    let row = format!(
        "| `maxBufferedHits` | {} | bound of the `for await` buffer, in hits (1–{}) |",
        grouped(default),
        grouped(max)
    );
    assert!(
        read("README.md").contains(&row),
        "README.md must have the row\n{row}"
    );
    let doc = format!(
        "Bound of the async iterator's buffer, in hits (default {}).",
        grouped(default)
    );
    assert!(
        read("js/index.d.ts").contains(&doc),
        "js/index.d.ts must document maxBufferedHits as\n{doc}"
    );
}

#[test]
fn the_command_line_agrees_with_the_schema() {
    let cli = read("bin/livestream-wasm.js");
    // The ids it prints bare are the core's id fields.
    let start = cli
        .find("const ID_FIELDS = new Set([")
        .expect("ID_FIELDS in the CLI");
    let list = &cli[start..start + cli[start..].find("])").expect("end of ID_FIELDS")];
    let names: BTreeSet<&str> = list.split('"').skip(1).step_by(2).collect();
    assert_eq!(
        names,
        ID_FIELDS.into_iter().collect(),
        "bin/livestream-wasm.js ID_FIELDS"
    );
    // The defaults and ranges its --help states are the schema's.
    let spec = option_spec("maxConnections").unwrap();
    let Kind::Integer { min, max, .. } = spec.kind else {
        panic!("maxConnections is an integer option")
    };
    let want = format!("maxConnections, {min} to {max} (default {})", spec.default);
    assert!(cli.contains(&want), "the CLI's --help must say {want:?}");
    let spec = option_spec("reconnectDelayMs").unwrap();
    let want = format!("(default {})", spec.default);
    let line = cli
        .lines()
        .find(|l| l.contains("--reconnect-delay-ms N"))
        .expect("--reconnect-delay-ms in the usage");
    assert!(
        line.contains(&want),
        "the CLI's --help must say {want:?} for --reconnect-delay-ms"
    );
}
