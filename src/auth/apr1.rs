//! Apache's `$apr1$` password hash: the MD5-based crypt of FreeBSD with its own magic string
//! (what `htpasswd -m` writes).

use md5::{Digest, Md5};

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MAGIC: &[u8] = b"$apr1$";

/// The `$apr1$salt$hash` string of `password` with `salt` (at most 8 bytes are used).
pub fn hash(password: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let mut out = String::with_capacity(37);
    out.push_str("$apr1$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let f = fin;
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        let v = (u32::from(f[a]) << 16) | (u32::from(f[b]) << 8) | u32::from(f[c]);
        to64(&mut out, v, 4);
    }
    to64(&mut out, u32::from(f[11]), 2);
    out
}

fn to64(out: &mut String, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(char::from(ITOA64[(v & 0x3f) as usize]));
        v >>= 6;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_openssl_passwd_apr1() {
        // openssl passwd -apr1 -salt abcdefgh secret
        assert_eq!(
            super::hash(b"secret", b"abcdefgh"),
            "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/"
        );
        assert_eq!(super::hash(b"", b"ab"), "$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.");
        assert_eq!(
            super::hash(b"a much longer password than sixteen bytes", b"12345678"),
            "$apr1$12345678$RkSsHiO1RUdjaoav57ZaW/"
        );
    }
}
