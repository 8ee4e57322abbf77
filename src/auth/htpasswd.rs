//! htpasswd files: `user:hash` lines with bcrypt (`$2y$`, `$2b$`, `$2a$`), SHA-512 and
//! SHA-256 crypt (`$6$`, `$5$`) and Apache MD5 (`$apr1$`) hashes.
//!
//! Every comparison is constant-time (the crates' own, `subtle` for apr1), and a user who is
//! not in the file is checked against a dummy hash of the same kind and cost as the file's
//! first entry, so a wrong name takes as long as a wrong password and does not tell which
//! names exist.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

use super::apr1;

/// One stored hash, checked by its kind.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$2y$cost$…`, `$2b$`, `$2a$`.
    Bcrypt(String),
    /// `$6$[rounds=N$]salt$hash`.
    Sha512(String),
    /// `$5$[rounds=N$]salt$hash`.
    Sha256(String),
    /// `$apr1$salt$hash`.
    Apr1 {
        /// The salt.
        salt: String,
        /// The whole stored string.
        full: String,
    },
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes stay out of debug output and logs.
        f.write_str(match self {
            Hash::Bcrypt(_) => "bcrypt",
            Hash::Sha512(_) => "sha512-crypt",
            Hash::Sha256(_) => "sha256-crypt",
            Hash::Apr1 { .. } => "apr1",
        })
    }
}

impl Hash {
    /// Recognises the kind of `s`; an unsupported one is an error naming it.
    pub fn parse(s: &str) -> Result<Hash, String> {
        if s.starts_with("$2y$") || s.starts_with("$2b$") || s.starts_with("$2a$") {
            return Ok(Hash::Bcrypt(s.to_string()));
        }
        if s.starts_with("$6$") {
            return Ok(Hash::Sha512(s.to_string()));
        }
        if s.starts_with("$5$") {
            return Ok(Hash::Sha256(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let (salt, _) = rest
                .split_once('$')
                .ok_or_else(|| "malformed $apr1$ hash".to_string())?;
            return Ok(Hash::Apr1 {
                salt: salt.to_string(),
                full: s.to_string(),
            });
        }
        let kind = if s.starts_with("{SHA}") {
            "{SHA} (unsalted SHA-1)"
        } else if s.starts_with("$1$") {
            "$1$ (MD5 crypt)"
        } else if s.len() == 13 {
            "DES crypt"
        } else {
            "unknown"
        };
        Err(format!(
            "unsupported hash kind {kind}: use bcrypt (htpasswd -B), SHA-512/SHA-256 crypt or apr1 (htpasswd -m)"
        ))
    }

    /// Whether `password` matches, in constant time for the comparison.
    pub fn check(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Sha512(h) => match std::str::from_utf8(password) {
                Ok(p) => sha_crypt::sha512_check(p, h).is_ok(),
                Err(_) => false,
            },
            Hash::Sha256(h) => match std::str::from_utf8(password) {
                Ok(p) => sha_crypt::sha256_check(p, h).is_ok(),
                Err(_) => false,
            },
            Hash::Apr1 { salt, full } => {
                let made = apr1::hash(password, salt.as_bytes());
                made.as_bytes().ct_eq(full.as_bytes()).into()
            }
        }
    }

    /// A hash of the same kind and cost, of a password nobody knows: what an unknown user is
    /// checked against.
    fn dummy(&self) -> Hash {
        const PW: &str = "luahttpd dummy password";
        let made = match self {
            Hash::Bcrypt(h) => {
                let cost = h.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(10);
                bcrypt::hash_with_salt(PW, cost, *b"luahttpd-dummy-s")
                    .map(|p| p.format_for_version(bcrypt::Version::TwoY))
                    .ok()
            }
            Hash::Sha512(h) => sha_crypt::Sha512Params::new(rounds(h))
                .ok()
                .and_then(|p| sha_crypt::sha512_simple(PW, &p).ok()),
            Hash::Sha256(h) => sha_crypt::Sha256Params::new(rounds(h))
                .ok()
                .and_then(|p| sha_crypt::sha256_simple(PW, &p).ok()),
            Hash::Apr1 { .. } => Some(apr1::hash(PW.as_bytes(), b"dummysal")),
        };
        made.and_then(|s| Hash::parse(&s).ok())
            .unwrap_or_else(|| self.clone())
    }
}

/// The `rounds=N` of a SHA crypt string, else the default 5000.
fn rounds(h: &str) -> usize {
    h.split('$')
        .nth(2)
        .and_then(|p| p.strip_prefix("rounds="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000)
}

/// The users of one htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, Hash>,
    dummy: Hash,
}

impl Users {
    /// Parses a file's text; an error gives the 1-based line and the problem.
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut users = BTreeMap::new();
        let mut first = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err((i + 1, "expected user:hash".into()));
            };
            if user.is_empty() {
                return Err((i + 1, "empty user name".into()));
            }
            let hash =
                Hash::parse(hash.trim()).map_err(|e| (i + 1, format!("user '{user}': {e}")))?;
            if users.contains_key(user) {
                return Err((i + 1, format!("user '{user}' given twice")));
            }
            if first.is_none() {
                first = Some(hash.clone());
            }
            users.insert(user.to_string(), hash);
        }
        let dummy = match first {
            Some(h) => h.dummy(),
            None => Hash::Apr1 {
                salt: "dummysal".into(),
                full: apr1::hash(b"luahttpd dummy password", b"dummysal"),
            },
        };
        Ok(Users { users, dummy })
    }

    /// Whether `user` exists with `password`. An unknown user costs one check of the dummy
    /// hash, as a known one costs one check of its own.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(h) => h.check(password),
            None => {
                let _ = std::hint::black_box(self.dummy.check(password));
                false
            }
        }
    }

    /// How many users the file has.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hash_kind_checks() {
        let bc = bcrypt::hash_with_salt("pw-b", 4, [7u8; 16])
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoY);
        let s512 =
            sha_crypt::sha512_simple("pw-6", &sha_crypt::Sha512Params::new(1000).expect("p"))
                .expect("sha512");
        let s256 =
            sha_crypt::sha256_simple("pw-5", &sha_crypt::Sha256Params::new(1000).expect("p"))
                .expect("sha256");
        let text = format!(
            "# comment\nb:{bc}\nsix:{s512}\nfive:{s256}\napr:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n"
        );
        let u = Users::parse(&text).expect("parse");
        assert_eq!(u.len(), 4);
        assert!(u.verify("b", b"pw-b") && !u.verify("b", b"pw-x"));
        assert!(u.verify("six", b"pw-6") && !u.verify("six", b"pw-5"));
        assert!(u.verify("five", b"pw-5") && !u.verify("five", b"pw-6"));
        assert!(u.verify("apr", b"secret") && !u.verify("apr", b"Secret"));
        assert!(!u.verify("nobody", b"pw-b"));
        // The dummy is of the first entry's kind and cost.
        assert!(matches!(&u.dummy, Hash::Bcrypt(h) if h.starts_with("$2y$04$")));
    }

    #[test]
    fn bad_files_name_the_line() {
        assert_eq!(
            Users::parse("a:$apr1$x$y\nnocolon\n").map(|_| ()),
            Err((2, "expected user:hash".into()))
        );
        let e = Users::parse("\na:{SHA}abc\n").expect_err("sha1");
        assert_eq!(e.0, 2);
        assert!(e.1.contains("{SHA}"), "{}", e.1);
        assert!(Users::parse("a:$apr1$x$y\na:$apr1$x$z\n").is_err());
        assert!(Users::parse("").expect("empty").is_empty());
    }
}
