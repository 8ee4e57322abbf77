//! JSON string escaping for any bytes (the status page and the `json` access-log format).
//!
//! Valid UTF-8 passes through; `"`, `\` and control characters are escaped; a byte that is not
//! part of valid UTF-8 becomes `\u00XX` with its own value, so the output is always valid JSON
//! and nothing is silently dropped (a log reader can tell which byte was there).

/// Appends `bytes` to `out` as the inside of a JSON string (no quotes).
pub fn push_escaped(out: &mut Vec<u8>, mut bytes: &[u8]) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                push_str(out, s);
                return;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                // The first `valid_up_to` bytes are valid UTF-8 by definition.
                push_str(out, std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1);
                for b in &rest[..bad] {
                    push_u(out, u32::from(*b));
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// Appends `s` as a quoted JSON string.
pub fn push_quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_str(out, s);
    out.push(b'"');
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => push_u(out, c as u32),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

fn push_u(out: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u00");
    out.push(HEX[(v >> 4 & 0xf) as usize]);
    out.push(HEX[(v & 0xf) as usize]);
}

#[cfg(test)]
mod tests {
    use super::push_escaped;

    fn esc(b: &[u8]) -> String {
        let mut out = Vec::new();
        push_escaped(&mut out, b);
        String::from_utf8(out).expect("always UTF-8")
    }

    #[test]
    fn every_byte_gives_valid_json() {
        assert_eq!(esc(b"a\"b\\c\n\x01\x7f"), "a\\\"b\\\\c\\n\\u0001\\u007f");
        assert_eq!(esc("é€".as_bytes()), "é€");
        assert_eq!(esc(b"x\xff\xc3y\xe2\x82"), "x\\u00ff\\u00c3y\\u00e2\\u0082");
        for b in 0..=255u8 {
            let s = format!("\"{}\"", esc(&[b, b'a', b]));
            let v: serde_json::Value = serde_json::from_str(&s).expect(&s);
            assert!(v.is_string());
        }
    }
}
