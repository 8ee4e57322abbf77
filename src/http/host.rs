//! Host header validation (RFC 9112 §3.2, RFC 3986 §3.2.2).

/// Splits and validates a Host value into (lowercased host, optional port).
/// IP literals keep their brackets. Errors mean 400.
pub fn parse(value: &[u8]) -> Result<(String, Option<u16>), ()> {
    let _ = value;
    todo!()
}
