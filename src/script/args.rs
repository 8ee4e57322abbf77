//! Query arguments for `req:arg(name)`: `application/x-www-form-urlencoded` decoding.

/// The first value of argument `name` in `query` (names compared after decoding), decoded:
/// `%XX` → byte, `+` → space. An argument without `=` has the empty value. Malformed `%`
/// escapes are kept as they are.
pub(super) fn arg(query: &str, name: &[u8]) -> Option<Vec<u8>> {
    for part in query.split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if decode(k.as_bytes()) == name {
            return Some(decode(v.as_bytes()));
        }
    }
    None
}

/// Form decoding of one name or value.
pub(super) fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode(b"a+b%20c%2Fd"), b"a b c/d");
        assert_eq!(decode(b"%zz%4"), b"%zz%4");
        assert_eq!(decode(b"%41"), b"A");
        assert_eq!(decode(b"%"), b"%");
        assert_eq!(decode(b"x%4"), b"x%4");
    }

    #[test]
    fn finds_first() {
        assert_eq!(arg("a=1&b=2&a=3", b"a"), Some(b"1".to_vec()));
        assert_eq!(arg("a=1&b", b"b"), Some(Vec::new()));
        assert_eq!(arg("q=hello+world&x%20y=z", b"x y"), Some(b"z".to_vec()));
        assert_eq!(arg("a=1", b"c"), None);
        assert_eq!(arg("&&a=%E2%82%AC", b"a"), Some("€".as_bytes().to_vec()));
    }
}
