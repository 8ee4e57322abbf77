//! Accept-Encoding (RFC 9110 §12.5.3): which content coding a response gets.
//!
//! Sans-IO: the header values in, a choice out. A malformed header is ignored as a whole (the
//! response goes uncompressed): guessing at a broken list could send a coding the client cannot
//! read, while identity is always safe.

use crate::config::static_opts::Coding;

/// A q-value in thousandths (0..=1000).
type Q = u16;

/// One parsed list: (coding token as sent, q) entries, borrowed from the request.
#[derive(Debug, Default, PartialEq)]
pub struct Accept<'a> {
    entries: Vec<(&'a str, Q)>,
}

/// Why a header was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl<'a> Accept<'a> {
    /// Parses every Accept-Encoding field value of a request (they form one list).
    pub fn parse(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Accept<'a>, Malformed> {
        let mut a = Accept::default();
        for v in values {
            let text = std::str::from_utf8(v).map_err(|_| Malformed)?;
            for item in text.split(',') {
                let item = item.trim_matches(|c| c == ' ' || c == '\t');
                if item.is_empty() {
                    continue; // empty list elements are allowed (RFC 9110 §5.6.1)
                }
                let mut parts = item.split(';');
                let token = parts.next().unwrap_or("").trim_matches([' ', '\t']);
                if !is_token(token) {
                    return Err(Malformed);
                }
                let mut q = 1000;
                for p in parts {
                    let p = p.trim_matches([' ', '\t']);
                    let (name, value) = p.split_once('=').ok_or(Malformed)?;
                    if name.trim_end_matches([' ', '\t']).eq_ignore_ascii_case("q") {
                        q = qvalue(value.trim_start_matches([' ', '\t'])).ok_or(Malformed)?;
                    } else {
                        return Err(Malformed); // codings take no other parameter
                    }
                }
                a.entries.push((token, q));
            }
        }
        Ok(a)
    }

    /// The q of an exact token, else None.
    fn explicit(&self, token: &str) -> Option<Q> {
        // With duplicates the first entry counts; duplicates are a client's mistake.
        self.entries
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(token))
            .map(|(_, q)| *q)
    }

    fn q_of(&self, c: Coding) -> Q {
        let explicit = match c {
            Coding::Gzip => self.explicit("gzip").or_else(|| self.explicit("x-gzip")),
            other => self.explicit(other.token()),
        };
        explicit.or_else(|| self.explicit("*")).unwrap_or(0)
    }

    /// How much the client prefers the unencoded representation: identity's own entry, else
    /// `*`'s, else least of all (it stays acceptable, RFC 9110 §12.5.3, but a client that lists
    /// codings asks for them).
    fn q_identity(&self) -> Q {
        self.explicit("identity")
            .or_else(|| self.explicit("*"))
            .unwrap_or(0)
    }

    /// The best of `offered` (in the server's preference order for ties); None: identity.
    /// When nothing is acceptable, not even identity (`identity;q=0` with no usable coding),
    /// the answer is identity as well: RFC 9110 allows it, and a 406 for a file helps nobody.
    pub fn choose(&self, offered: &[Coding]) -> Option<Coding> {
        let mut best: Option<(Coding, Q)> = None;
        for &c in offered {
            let q = self.q_of(c);
            if q > 0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((c, q));
            }
        }
        let (c, q) = best?;
        // Equal preference: the smaller representation.
        (q >= self.q_identity()).then_some(c)
    }
}

/// The coding for a request whose Accept-Encoding values are `values`; None: identity (no
/// header, a malformed one, or nothing offered that the client takes).
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    offered: &[Coding],
) -> Option<Coding> {
    Accept::parse(values).ok()?.choose(offered)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn qvalue(s: &str) -> Option<Q> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: Q = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += Q::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::{Brotli, Gzip, Zstd};

    const OFFER: &[Coding] = &[Zstd, Gzip];

    fn pick(h: &str) -> Option<Coding> {
        negotiate([h.as_bytes()], OFFER)
    }

    #[test]
    fn simple_lists() {
        assert_eq!(pick("gzip"), Some(Gzip));
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Zstd));
        assert_eq!(pick("deflate"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick("GZIP"), Some(Gzip));
        assert_eq!(pick("x-gzip"), Some(Gzip));
        assert_eq!(negotiate(std::iter::empty(), OFFER), None);
    }

    #[test]
    fn q_values_order_and_exclude() {
        assert_eq!(pick("zstd;q=0.5, gzip"), Some(Gzip));
        assert_eq!(pick("zstd;q=0.5, gzip;q=0.5"), Some(Zstd));
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("gzip;q=0, zstd;q=0.001"), Some(Zstd));
        assert_eq!(pick("gzip ; q=0.8 , zstd;Q=0.9"), Some(Zstd));
        // identity preferred over the codings.
        assert_eq!(pick("gzip;q=0.5, identity"), None);
        assert_eq!(pick("gzip;q=0.5, identity;q=0.5"), Some(Gzip));
    }

    #[test]
    fn identity_q0() {
        assert_eq!(pick("identity;q=0, gzip"), Some(Gzip));
        // Nothing acceptable: identity all the same.
        assert_eq!(pick("identity;q=0"), None);
        assert_eq!(pick("identity;q=0, gzip;q=0"), None);
        assert_eq!(pick("*;q=0"), None);
    }

    #[test]
    fn star() {
        assert_eq!(pick("*"), Some(Zstd));
        assert_eq!(pick("*, zstd;q=0"), Some(Gzip));
        assert_eq!(pick("*;q=0, gzip"), Some(Gzip));
        assert_eq!(pick("br;q=1, *;q=0.1"), Some(Zstd));
        assert_eq!(negotiate([b"br".as_slice()], &[Brotli, Gzip]), Some(Brotli));
    }

    #[test]
    fn malformed_means_identity() {
        for h in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.0001",
            "gzip;q=",
            "gzip;q",
            "gzip;level=9",
            "gz ip",
            "gzip;q=abc",
            "\"gzip\"",
            "gzip;q=-1",
            "gzip;q=.5",
        ] {
            assert_eq!(pick(h), None, "{h}");
        }
        assert_eq!(negotiate([&b"gzip\xff"[..]], OFFER), None);
        // Empty elements are not malformed.
        assert_eq!(pick(", ,gzip,"), Some(Gzip));
        assert_eq!(pick("gzip;q=1.000"), Some(Gzip));
        assert_eq!(pick("gzip;q=0.25"), Some(Gzip));
    }

    #[test]
    fn several_fields_form_one_list() {
        let v: [&[u8]; 2] = [b"zstd;q=0", b"gzip"];
        assert_eq!(negotiate(v, OFFER), Some(Gzip));
    }
}
