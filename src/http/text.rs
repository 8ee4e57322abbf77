//! `Text`: an immutable string held inline when short, so the parts of a typical request head
//! (target, path, query, host) cost no heap allocation.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// The longest text held inline; `Text` is then 32 bytes, String's 24 plus one word.
const INLINE: usize = 30;

/// An immutable UTF-8 string: inline up to 30 bytes, else boxed. Reads as a `&str`.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Not validated again: a request reads its inline texts many times (route, site
            // rules, the proxy's request head), and checking each time cost a proxied request
            // about 1,500 instructions (callgrind).
            Repr::Inline { len, bytes } => {
                let b = bytes.get(..usize::from(*len)).unwrap_or_default();
                // SAFETY: only `From<&str>` writes an inline `Text`, copying a whole `&str`
                // (valid UTF-8) into `bytes[..len]`; a `Text` is immutable afterwards (no
                // method hands out `bytes` mutably), so `b` is that same valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            Repr::Heap(s) => s,
        }
    }

    /// Whether the text is held without a heap allocation.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Text(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        if s.len() <= INLINE {
            Text::from(s.as_str())
        } else {
            Text(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(s: Cow<'_, str>) -> Text {
        match s {
            Cow::Borrowed(s) => Text::from(s),
            Cow::Owned(s) => Text::from(s),
        }
    }
}

impl From<&Text> for String {
    fn from(t: &Text) -> String {
        t.as_str().to_owned()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_inline_and_long_text_boxed() {
        let short = Text::from("/index.html");
        assert!(short.is_inline());
        assert_eq!(short, "/index.html");
        assert_eq!(short.len(), 11);
        let edge = "x".repeat(INLINE);
        assert!(Text::from(edge.as_str()).is_inline());
        let long = "/a/".repeat(20);
        let t = Text::from(long.clone());
        assert!(!t.is_inline());
        assert_eq!(t, long);
        assert_eq!(Text::from("é/ü"), *"é/ü");
        assert_eq!(
            format!("{} {:?}", short, short),
            "/index.html \"/index.html\""
        );
        assert_eq!(std::mem::size_of::<Text>(), 32);
    }
}
