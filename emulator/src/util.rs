//! Small helpers: percent-decoding, query strings, JSON error bodies.

/// Decodes `%XX` escapes (and `+` as space when `plus` is set). Invalid escapes are kept
/// literally. Returns bytes: the caller decides whether they must be UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Parses a query string into decoded (name, value) pairs, in order.
pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k, true)).into_owned(),
                String::from_utf8_lossy(&percent_decode(v, true)).into_owned(),
            )
        })
        .collect()
}

/// The first value of query parameter `name`.
pub fn query_get<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The JSON error body the Live Stream API uses.
pub fn error_json(error: &str, description: &str) -> String {
    serde_json::json!({ "error": error, "error_description": description }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("a%2e%2E/%2f", false), b"a../\x2f".to_vec());
        assert_eq!(percent_decode("a+b%", true), b"a b%".to_vec());
        assert_eq!(percent_decode("%zz%4", false), b"%zz%4".to_vec());
        let q = parse_query(Some("maxConnections=2&reset=smallest&x&a%20b=c+d"));
        assert_eq!(query_get(&q, "maxConnections"), Some("2"));
        assert_eq!(query_get(&q, "x"), Some(""));
        assert_eq!(query_get(&q, "a b"), Some("c d"));
    }
}
