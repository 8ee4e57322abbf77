//! Session tickets whose keys every worker shares, so a client resumes on any worker, and
//! which roll and are erased, as rustls asks of a ticketer.
//!
//! A chain of secrets, one per period of [`PERIOD`] seconds: the first is drawn in the watcher
//! when it loads a config with TLS, before any worker is forked (see [`init`]); each next one
//! is HKDF of the one before, and the key of a period is HKDF of its secret. Every process
//! moves its own copy of the chain forward on the clock and keeps only the current and the
//! previous secret, so the workers agree on the keys without talking to each other, a ticket
//! is accepted in the period it was made in and the next one, and a memory dump of a process
//! cannot open tickets older than that (the watcher's copy moves on at each config load).
//! A ticket is `period (8 bytes, big endian) · nonce (12) · AES-256-GCM(state)`.

// aws-lc-rs offers ring's API, so the same code runs on either provider.
#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs as crypto;
#[cfg(not(feature = "aws-lc-rs"))]
use ring as crypto;

use self::crypto::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use self::crypto::hkdf::{Salt, HKDF_SHA256};
use self::crypto::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use std::sync::{Mutex, MutexGuard};

/// How long one ticket key is used to make tickets, in seconds; it is accepted for twice that.
pub const PERIOD: u64 = 3600;

/// The chain's state in this process: the secrets of `period` and of the period before.
struct Chain {
    period: u64,
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    /// The AEAD keys derived from those two secrets, by period, so a ticket costs one seal
    /// and not an HKDF and an AES key schedule too (3% of a full TLS 1.3 handshake's
    /// instructions with ring, measured with callgrind). Dropped with their secret.
    keys: Vec<(u64, LessSafeKey)>,
}

/// Locked only by the one thread of a process, never across a fork.
static CHAIN: Mutex<Option<Chain>> = Mutex::new(None);

fn chain() -> MutexGuard<'static, Option<Chain>> {
    CHAIN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Draws the chain's first secret, once per server run, or moves the chain to now. Called by
/// the watcher at each load of a config with TLS, before any worker is forked, so all of
/// them share the chain and the watcher keeps nothing older than the last load.
pub fn init() {
    let mut c = chain();
    match c.as_mut() {
        Some(chain) => chain.advance(now_period()),
        None => {
            let mut first = [0u8; 32];
            // Without a working random source no TLS is possible at all: rustls fails first.
            let _ = SystemRandom::new().fill(&mut first);
            *c = Some(Chain {
                period: now_period(),
                current: first,
                previous: None,
                keys: Vec::new(),
            });
        }
    }
}

impl Chain {
    /// Moves to `now`, overwriting what is older than the previous period. A clock that went
    /// back leaves the chain where it is (it cannot go back).
    fn advance(&mut self, now: u64) {
        while self.period < now {
            let next = step(&self.current);
            self.previous = Some(self.current);
            self.current = next;
            self.period += 1;
        }
        let oldest = self.period.saturating_sub(1);
        self.keys.retain(|(p, _)| *p >= oldest);
    }

    /// The key of `period`, derived once, while the chain holds its secret.
    fn key(&mut self, period: u64) -> Option<&LessSafeKey> {
        if !self.keys.iter().any(|(p, _)| *p == period) {
            let key = key_for(self.secret(period)?, period)?;
            self.keys.push((period, key));
        }
        self.keys.iter().find(|(p, _)| *p == period).map(|(_, k)| k)
    }

    fn secret(&self, period: u64) -> Option<&[u8; 32]> {
        if period == self.period {
            Some(&self.current)
        } else if period.checked_add(1) == Some(self.period) {
            self.previous.as_ref()
        } else {
            None
        }
    }
}

/// The next secret of the chain.
fn step(secret: &[u8; 32]) -> [u8; 32] {
    let mut next = [0u8; 32];
    let prk = Salt::new(HKDF_SHA256, b"luahttpd ticket chain").extract(secret);
    let info = [b"next".as_slice()];
    if let Ok(okm) = prk.expand(&info, HKDF_SHA256) {
        let _ = okm.fill(&mut next);
    }
    next
}

/// The ticketer every worker uses.
#[derive(Debug, Default)]
pub struct SharedTickets;

fn now_period() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / PERIOD
}

/// The AEAD key of `period` from its secret.
fn key_for(secret: &[u8; 32], period: u64) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, b"luahttpd session tickets").extract(secret);
    let info = period.to_be_bytes();
    let info = [info.as_slice()];
    let okm = prk.expand(&info, &AES_256_GCM).ok()?;
    let unbound: UnboundKey = okm.into();
    Some(LessSafeKey::new(unbound))
}

/// `f` of the current period and its key, the chain moved to now (None: no chain).
fn with_current_key<R>(f: impl FnOnce(u64, &LessSafeKey) -> Option<R>) -> Option<R> {
    let mut c = chain();
    let chain = c.as_mut()?;
    chain.advance(now_period());
    let period = chain.period;
    f(period, chain.key(period)?)
}

/// `f` of the key of `period`, if the chain still holds its secret.
fn with_key_of<R>(period: u64, f: impl FnOnce(&LessSafeKey) -> Option<R>) -> Option<R> {
    let mut c = chain();
    let chain = c.as_mut()?;
    chain.advance(now_period());
    f(chain.key(period)?)
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        with_current_key(|period, key| {
            let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + 16);
            out.extend_from_slice(&period.to_be_bytes());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(plain);
            let (head, body) = out.split_at_mut(8 + NONCE_LEN);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&head[..8]),
                    body,
                )
                .ok()?;
            out.extend_from_slice(tag.as_ref());
            Some(out)
        })
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (period, rest) = cipher.split_first_chunk::<8>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let mut body = sealed.to_vec();
        let n = with_key_of(u64::from_be_bytes(*period), |key| {
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(period.as_slice()),
                    &mut body,
                )
                .ok()?;
            Some(plain.len())
        })?;
        body.truncate(n);
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_again_and_a_changed_one_does_not() {
        init();
        let t = SharedTickets;
        let c = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&c).unwrap(), b"session state");
        let mut bad = c.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(t.decrypt(&bad).is_none());
        let mut old = c;
        old[..8].copy_from_slice(&(now_period() - 2).to_be_bytes());
        assert!(t.decrypt(&old).is_none());
        assert!(t.decrypt(b"short").is_none());
    }

    #[test]
    fn two_copies_of_a_chain_agree_and_forget_what_is_older_than_one_period() {
        let start = Chain {
            period: 100,
            current: [7u8; 32],
            previous: None,
            keys: Vec::new(),
        };
        // A worker forked at period 100 and one forked after the watcher moved to 101.
        let mut early = Chain { ..start };
        let mut late = Chain {
            period: 100,
            current: [7u8; 32],
            previous: None,
            keys: Vec::new(),
        };
        late.advance(101);
        early.advance(103);
        late.advance(103);
        assert_eq!(early.current, late.current);
        assert_eq!(early.secret(102), late.secret(102));
        assert!(early.secret(102).is_some());
        assert!(early.secret(101).is_none(), "two periods back must be gone");
        assert!(early.secret(104).is_none());
        // The clock going back does not move the chain back.
        early.advance(90);
        assert_eq!(early.period, 103);
        // A jump far ahead (an idle worker) still ends with the same two secrets as a copy
        // that moved period by period, so it opens the tickets the busy one just made.
        early.advance(200);
        for p in 104..=200 {
            late.advance(p);
        }
        assert_eq!(early.secret(199), late.secret(199));
        assert_eq!(early.secret(200), late.secret(200));
        assert!(early.secret(198).is_none());
        assert_ne!(step(&[1u8; 32]), step(&[2u8; 32]));
        // Keys are cached for the two periods the chain holds, and go with their secret.
        assert!(early.key(200).is_some() && early.key(199).is_some());
        assert!(early.key(198).is_none());
        early.advance(202);
        assert!(
            early.keys.is_empty(),
            "keys of periods the chain forgot are kept"
        );
        assert!(early.key(202).is_some());
        assert_eq!(early.keys.len(), 1);
    }
}
