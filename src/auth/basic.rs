//! The `Authorization: Basic` credentials of a request (RFC 7617).

use base64::Engine;

/// User name and password from a Basic `Authorization` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (UTF-8, no control characters).
    pub user: String,
    /// The password bytes.
    pub password: Vec<u8>,
}

/// The credentials in `value` (the Authorization field's value), None when it is not Basic
/// or cannot be read (a bad one is answered like a missing one: 401).
pub fn parse(value: &[u8]) -> Option<Credentials> {
    let value = trim(value);
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(trim(rest))
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return None;
    }
    Some(Credentials {
        user: user.to_string(),
        password: decoded[colon + 1..].to_vec(),
    })
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        // "Aladdin:open sesame", RFC 7617's example.
        let c = parse(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").expect("parsed");
        assert_eq!(c.user, "Aladdin");
        assert_eq!(c.password, b"open sesame");
        assert_eq!(
            parse(b"bAsIc   QWxhZGRpbjpvcGVuIHNlc2FtZQ== ").map(|c| c.user),
            Some("Aladdin".into())
        );
        // A password may hold ':'.
        let c = parse(b"Basic dTphOmI=").expect("u:a:b");
        assert_eq!(c.password, b"a:b");
        for bad in [
            &b"Bearer abc"[..],
            b"Basic",
            b"Basic !!!",
            b"Basic bm9jb2xvbg==",
            b"Basic OnB3",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
