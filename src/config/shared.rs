//! `shared "name" { size = "8m" }`: a shared dictionary zone (issue 13; the zone itself is
//! `crate::shared`).

use mlua::Value;

use super::error::ConfigError;
use super::site::Site;

/// Smallest zone size accepted (64 KiB: a few of the zone's probe windows).
pub const MIN_SIZE: usize = 64 * 1024;
/// Largest zone size accepted (4 GiB).
pub const MAX_SIZE: usize = 1 << 32;

/// A shared dictionary definition, validated but not yet mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDef {
    /// The zone's name (`shared.NAME` at request time), unique in the config.
    pub name: String,
    /// Where it was defined, for messages.
    pub defined_at: String,
    /// Bytes of shared memory (`size`, rounded up to whole pages when mapped).
    pub size: usize,
}

/// Validates the table of `shared "name" {...}`.
pub(super) fn shared(name: &str, v: &Value, site: &Site) -> (SharedDef, Vec<ConfigError>) {
    let mut def = SharedDef {
        name: name.to_string(),
        defined_at: site.position(),
        size: 1024 * 1024,
    };
    let mut errors = Vec::new();
    let err = |m: String| site.error(format!("shared '{name}': {m}"));
    let Value::Table(t) = v else {
        errors.push(err(format!(
            "expects a table: shared \"{name}\" {{ size = \"1m\" }}, got {}",
            v.type_name()
        )));
        return (def, errors);
    };
    let mut size = None;
    for pair in t.clone().pairs::<Value, Value>() {
        let Ok((k, v)) = pair else { continue };
        match &k {
            Value::String(s) if s.as_bytes() == b"size" => size = Some(v),
            other => {
                let k = match other {
                    Value::String(s) => s.to_string_lossy(),
                    o => format!("[{}]", o.type_name()),
                };
                errors.push(err(format!("unknown key '{k}' (size)")));
            }
        }
    }
    match size {
        None => errors.push(err("needs a size: shared \"name\" { size = \"1m\" }".into())),
        Some(v) => match parse_size(&v) {
            Some(n) if (MIN_SIZE..=MAX_SIZE).contains(&n) => def.size = n,
            Some(n) => errors.push(err(format!(
                "size {n} bytes is out of range ({}k to {}g)",
                MIN_SIZE / 1024,
                MAX_SIZE >> 30
            ))),
            None => errors.push(err(
                "size must be bytes: a number or a string like \"512k\", \"8m\", \"1g\"".into(),
            )),
        },
    }
    (def, errors)
}

/// `8m`, `512k`, `1g`, `65536`, or an integer.
fn parse_size(v: &Value) -> Option<usize> {
    match v {
        Value::Integer(n) => usize::try_from(*n).ok(),
        Value::String(s) => {
            let s = s.to_str().ok()?.trim().to_ascii_lowercase();
            let (digits, mult) = match s.as_bytes().last()? {
                b'k' => (&s[..s.len() - 1], 1usize << 10),
                b'm' => (&s[..s.len() - 1], 1 << 20),
                b'g' => (&s[..s.len() - 1], 1 << 30),
                _ => (&s[..], 1),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<usize>().ok()?.checked_mul(mult)
        }
        _ => None,
    }
}

/// `-p`: the zone as it reads back.
pub(super) fn print(o: &mut String, def: &SharedDef) {
    o.push_str(&format!(
        "shared {} {{ size = {} }}\n",
        super::print::lua_string(&def.name),
        def.size
    ));
}
