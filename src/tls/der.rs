//! The few facts `-t` and `certificates()` report about a leaf certificate (its DNS names,
//! issuer and expiry), read straight from the DER. A full X.509 parser (x509-parser with nom,
//! asn1-rs and the OID tables) cost about half a megabyte of binary for these three fields;
//! rustls and the provider check the certificate itself, so this reader only has to find them.

/// What a leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The DNS names of the subjectAltName extension, lowercased; else the subject's CNs.
    pub dns_names: Vec<String>,
    /// The issuer's distinguished name as `C=US, O=Example, CN=Example CA`.
    pub issuer: String,
    /// The end of the validity period, in unix seconds.
    pub not_after: i64,
}

/// Why the DER could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub &'static str);

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const BMP_STRING: u8 = 0x1e;
/// `[3] EXPLICIT` in TBSCertificate: the extensions.
const EXTENSIONS: u8 = 0xa3;
/// `[2] IMPLICIT IA5String` in GeneralName: a DNS name.
const DNS_NAME: u8 = 0x82;
/// 2.5.29.17, subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3, commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// The short names x509-parser printed (so `-t` output did not change), by OID content bytes.
const ABBREV: &[(&[u8], &str)] = &[
    (OID_CN, "CN"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x05], "serialNumber"),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "Email",
    ),
];

/// A cursor over DER: each `next` takes one tag-length-value.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element's tag and contents.
    fn next(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let short = DerError("truncated DER");
        let (&tag, rest) = self.0.split_first().ok_or(short.clone())?;
        let (&first, mut rest) = rest.split_first().ok_or(short.clone())?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(DerError("bad DER length"));
            }
            let (bytes, r) = rest.split_at(n);
            rest = r;
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b))
        };
        if rest.len() < len {
            return Err(short);
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok((tag, value))
    }

    /// The next element, which must have tag `want`.
    fn expect(&mut self, want: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        match self.next()? {
            (t, v) if t == want => Ok(v),
            _ => Err(DerError(what)),
        }
    }
}

/// Reads the DNS names, issuer and expiry of a DER certificate.
pub fn facts(cert: &[u8]) -> Result<Facts, DerError> {
    let outer = Der(cert).expect(SEQUENCE, "not a certificate (no outer SEQUENCE)")?;
    let mut tbs = Der(Der(outer).expect(SEQUENCE, "no tbsCertificate")?);
    let (mut tag, _) = tbs.next()?;
    if tag == 0xa0 {
        // The optional [0] version came first: the serial number follows.
        tag = tbs.next()?.0;
    }
    if tag != 0x02 {
        return Err(DerError("no serial number"));
    }
    tbs.expect(SEQUENCE, "no signature algorithm")?;
    let issuer = name_text(tbs.expect(SEQUENCE, "no issuer")?)?;
    let mut validity = Der(tbs.expect(SEQUENCE, "no validity")?);
    validity.next()?;
    let not_after = match validity.next()? {
        (UTC_TIME, v) => time(v, false)?,
        (GENERALIZED_TIME, v) => time(v, true)?,
        _ => return Err(DerError("bad notAfter")),
    };
    let subject = tbs.expect(SEQUENCE, "no subject")?;
    tbs.expect(SEQUENCE, "no subject public key")?;
    let mut dns_names = Vec::new();
    while !tbs.is_empty() {
        let (tag, v) = tbs.next()?;
        if tag == EXTENSIONS {
            san_names(v, &mut dns_names)?;
        }
    }
    if dns_names.is_empty() {
        // Old certificates name their host only in the subject's CN.
        for_each_attr(subject, |oid, tag, value| {
            if oid == OID_CN {
                dns_names.push(string(tag, value).to_ascii_lowercase());
            }
        })?;
    }
    Ok(Facts {
        dns_names,
        issuer,
        not_after,
    })
}

/// Appends the DNS names of the subjectAltName in `exts` (the `[3]` element's contents).
fn san_names(exts: &[u8], out: &mut Vec<String>) -> Result<(), DerError> {
    let mut list = Der(Der(exts).expect(SEQUENCE, "bad extensions")?);
    while !list.is_empty() {
        let mut ext = Der(list.expect(SEQUENCE, "bad extension")?);
        if ext.expect(OID, "bad extension id")? != OID_SAN {
            continue;
        }
        let mut value = ext.next()?;
        if value.0 == 0x01 {
            // The optional `critical` BOOLEAN.
            value = ext.next()?;
        }
        if value.0 != OCTET_STRING {
            return Err(DerError("bad subjectAltName"));
        }
        let mut names = Der(Der(value.1).expect(SEQUENCE, "bad subjectAltName")?);
        while !names.is_empty() {
            let (tag, v) = names.next()?;
            if tag == DNS_NAME {
                out.push(String::from_utf8_lossy(v).to_ascii_lowercase());
            }
        }
    }
    Ok(())
}

/// Calls `f(oid, tag, value)` for each attribute of a Name, in order.
fn for_each_attr<'a>(
    name: &'a [u8],
    mut f: impl FnMut(&'a [u8], u8, &'a [u8]),
) -> Result<(), DerError> {
    let mut rdns = Der(name);
    while !rdns.is_empty() {
        for_each_attr_in_set(rdns.expect(SET, "bad name")?, &mut f)?;
    }
    Ok(())
}

/// A Name as text: RDNs joined by `, `, the attributes of one RDN by ` + `.
fn name_text(name: &[u8]) -> Result<String, DerError> {
    let mut out = String::new();
    let mut rdns = Der(name);
    while !rdns.is_empty() {
        let set = rdns.expect(SET, "bad name")?;
        if !out.is_empty() {
            out.push_str(", ");
        }
        let mut first = true;
        for_each_attr_in_set(set, |oid, tag, value| {
            if !first {
                out.push_str(" + ");
            }
            first = false;
            match ABBREV.iter().find(|(o, _)| *o == oid) {
                Some((_, a)) => out.push_str(a),
                None => out.push_str(&oid_text(oid)),
            }
            out.push('=');
            out.push_str(&string(tag, value));
        })?;
    }
    Ok(out)
}

/// Calls `f(oid, tag, value)` for each attribute of one RDN (a SET).
fn for_each_attr_in_set<'a>(
    set: &'a [u8],
    mut f: impl FnMut(&'a [u8], u8, &'a [u8]),
) -> Result<(), DerError> {
    let mut set = Der(set);
    while !set.is_empty() {
        let mut atv = Der(set.expect(SEQUENCE, "bad name attribute")?);
        let oid = atv.expect(OID, "bad name attribute")?;
        let (tag, value) = atv.next()?;
        f(oid, tag, value);
    }
    Ok(())
}

/// An attribute value as text: the string types as they are, BMPString from UTF-16, anything
/// else in upper-case hex.
fn string(tag: u8, value: &[u8]) -> String {
    match tag {
        0x0c | 0x12 | 0x13 | 0x14 | 0x15 | 0x16 | 0x19 | 0x1a | 0x1b | 0x07 => {
            String::from_utf8_lossy(value).into_owned()
        }
        BMP_STRING => {
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        _ => value.iter().map(|b| format!("{b:02X}")).collect(),
    }
}

/// An OID in dotted form, for attributes without a short name.
fn oid_text(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut cur = 0u64;
    for b in oid {
        cur = (cur << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (cur / 40).min(2);
                arcs.push(first);
                arcs.push(cur - first * 40);
            } else {
                arcs.push(cur);
            }
            cur = 0;
        }
    }
    let parts: Vec<String> = arcs.iter().map(u64::to_string).collect();
    parts.join(".")
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in unix seconds.
fn time(v: &[u8], four_digit_year: bool) -> Result<i64, DerError> {
    let bad = DerError("bad time");
    let digits = |s: &[u8]| -> Result<i64, DerError> {
        s.iter().try_fold(0i64, |a, b| {
            if b.is_ascii_digit() {
                Ok(a * 10 + i64::from(b - b'0'))
            } else {
                Err(DerError("bad time"))
            }
        })
    };
    let ylen = if four_digit_year { 4 } else { 2 };
    if v.len() < ylen + 10 || v[ylen + 10] != b'Z' {
        return Err(bad);
    }
    let mut year = digits(&v[..ylen])?;
    if !four_digit_year {
        // RFC 5280: 50..99 are 19xx, 00..49 are 20xx.
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let f = |i: usize| digits(&v[ylen + i..ylen + i + 2]);
    let (month, day, h, m, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad);
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_both_forms() {
        assert_eq!(time(b"700101000000Z", false), Ok(0));
        assert_eq!(time(b"491231235959Z", false), Ok(2_524_607_999));
        assert_eq!(time(b"20380119031408Z", true), Ok(2_147_483_648));
        assert_eq!(time(b"99991231235959Z", true), Ok(253_402_300_799));
        assert!(time(b"7001010000Z", false).is_err());
        assert!(time(b"701301000000Z", false).is_err());
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(oid_text(&[0x55, 0x04, 0x03]), "2.5.4.3");
        assert_eq!(
            oid_text(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(facts(b"").is_err());
        assert!(facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(facts(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_err());
    }

    #[test]
    fn reads_an_rcgen_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["www.example.com".into(), "*.Example.org".into()])
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = facts(cert.der()).unwrap();
        assert_eq!(f.dns_names, vec!["www.example.com", "*.example.org"]);
        assert_eq!(f.issuer, "C=DE, CN=Test CA");
        assert_eq!(f.not_after, days_from_civil(2031, 5, 17) * 86_400);
    }

    #[test]
    fn without_san_the_cn_names_the_host() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Old.Example.net");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = facts(cert.der()).unwrap();
        assert_eq!(f.dns_names, vec!["old.example.net"]);
        assert_eq!(f.issuer, "CN=Old.Example.net");
    }
}
