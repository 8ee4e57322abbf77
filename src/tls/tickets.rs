//! Session tickets whose keys every worker shares, so a client resumes on any worker.
//!
//! One master secret is drawn in the watcher before it forks (see [`init`]); every worker
//! inherits it. The key of each period of [`PERIOD`] seconds is derived from the master with
//! HKDF, so the keys rotate on the clock without the workers talking to each other, and a
//! ticket is accepted for the period it was made in and the next one. A ticket is
//! `period (8 bytes, big endian) · nonce (12) · AES-256-GCM(state)`.

// aws-lc-rs offers ring's API, so the same code runs on either provider.
#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs as crypto;
#[cfg(not(feature = "aws-lc-rs"))]
use ring as crypto;

use self::crypto::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use self::crypto::hkdf::{Salt, HKDF_SHA256};
use self::crypto::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use std::sync::OnceLock;

/// How long one ticket key is used to make tickets, in seconds; it is accepted for twice that.
pub const PERIOD: u64 = 3600;

static MASTER: OnceLock<[u8; 32]> = OnceLock::new();

/// Draws the master secret, once per server run. Called by the watcher while loading a config
/// with TLS, before any worker is forked, so that all of them share it.
pub fn init() {
    let _ = master();
}

fn master() -> &'static [u8; 32] {
    MASTER.get_or_init(|| {
        let mut m = [0u8; 32];
        // Without a working random source no TLS is possible at all: rustls would fail first.
        let _ = SystemRandom::new().fill(&mut m);
        m
    })
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

fn key_for(period: u64) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, b"luahttpd session tickets").extract(master());
    let info = period.to_be_bytes();
    let info = [info.as_slice()];
    let okm = prk.expand(&info, &AES_256_GCM).ok()?;
    let unbound: UnboundKey = okm.into();
    Some(LessSafeKey::new(unbound))
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = now_period();
        let key = key_for(period)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&out[..8]),
            &mut body,
        )
        .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (period, rest) = cipher.split_first_chunk::<8>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let p = u64::from_be_bytes(*period);
        let now = now_period();
        if p != now && p.checked_add(1) != Some(now) {
            return None;
        }
        let key = key_for(p)?;
        let mut body = sealed.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(period.as_slice()),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_again_and_a_changed_one_does_not() {
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
}
