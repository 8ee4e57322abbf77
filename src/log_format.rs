//! `access_log_format`: `"combined"`, `"json"` or a template with `$name` fields, compiled
//! once when the config loads into a list of parts that `access_line.rs` renders per request.
//!
//! Fields (nginx's names): `$remote_addr`, `$remote_port`, `$remote_user`, `$time_local`,
//! `$request`, `$request_method`, `$request_uri`, `$status`, `$body_bytes_sent`,
//! `$request_time`, `$bytes_received` (bytes the client sent through an upgrade tunnel after
//! the `101`, 0 for any other request), `$http_<name>` (a request header, `_` for `-`), `$upstream_addr` and
//! `$upstream_response_time` (set for proxied requests only: `Exchanging::upstream`),
//! `$tls_version` (`TLSv1.2`/`TLSv1.3`, from the connection's stream; absent on plain HTTP). `combined` is
//! `$remote_addr - $remote_user [...]` plus, for a proxied request only, a trailing
//! ` upstream=ADDR upstream_time=SECONDS` (`Field::UpstreamSuffix`, which no template can name).
//! `${name}` delimits a name followed by letters. Values are escaped for the format:
//! `"json"` escapes for JSON strings (any byte, see `json_text.rs`), the others as the combined
//! format does (`"` and `\` with a backslash, other non-printable bytes as `\xHH`). A value
//! that is absent (a missing header, no upstream, no TLS) is `-`, or empty in JSON.

/// How values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As the combined format: `\"`, `\\`, `\xHH`.
    Default,
    /// Inside a JSON string.
    Json,
}

/// A field of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The client address (the real one, see `real_ip.rs`).
    RemoteAddr,
    /// The client port.
    RemotePort,
    /// The user Basic auth authenticated (`-` when none).
    RemoteUser,
    /// The time in the common log format's `[...]` form, without brackets.
    TimeLocal,
    /// The request line (method, target, version), or the first line of a refused head.
    Request,
    /// The method.
    RequestMethod,
    /// The request target as sent.
    RequestUri,
    /// The response status.
    Status,
    /// Body bytes sent, without chunk framing (known when the response ends).
    BodyBytesSent,
    /// As `BodyBytesSent`, but `-` for none (the combined format's `%b`).
    BodyBytesClf,
    /// Seconds from the request head to the end of the response, with milliseconds.
    RequestTime,
    /// Bytes the client sent through an upgrade tunnel (0 when there was none), known when
    /// the exchange ends.
    BytesReceived,
    /// A request header (lower case name).
    Header(String),
    /// The HTTP upstream's address (proxied requests only).
    UpstreamAddr,
    /// The HTTP upstream's time to the response head (proxied requests only).
    UpstreamResponseTime,
    /// The TLS version of the connection (`access_line.rs` renders it absent for now).
    TlsVersion,
    /// The combined format's last part: ` upstream=ADDR upstream_time=SECONDS` for a proxied
    /// request, nothing otherwise (no `$name`: only `combined` has it).
    UpstreamSuffix,
}

impl Field {
    /// Whether the value is known only when the response ends.
    pub fn is_late(&self) -> bool {
        matches!(
            self,
            Field::BodyBytesSent
                | Field::BodyBytesClf
                | Field::RequestTime
                | Field::BytesReceived
                | Field::UpstreamAddr
                | Field::UpstreamResponseTime
                | Field::UpstreamSuffix
        )
    }
}

/// A piece of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text as written.
    Literal(Vec<u8>),
    /// A field's value.
    Field(Field),
}

/// Most fields known only at the end of a response that one format may hold.
pub const MAX_LATE: usize = 6;

/// A compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    /// What the config said (`combined`, `json`, or the template), for `-p`.
    pub source: String,
    /// The parts, in order; the line ends with a newline after them.
    pub parts: Vec<Part>,
    /// How values are escaped.
    pub escape: Escape,
}

const COMBINED: &str =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";
const JSON: &str = "{\"remote_addr\":\"$remote_addr\",\"time_local\":\"$time_local\",\"request\":\"$request\",\"status\":$status,\"body_bytes_sent\":$body_bytes_sent,\"request_time\":$request_time,\"bytes_received\":$bytes_received,\"http_referer\":\"$http_referer\",\"http_user_agent\":\"$http_user_agent\",\"upstream_addr\":\"$upstream_addr\",\"tls_version\":\"$tls_version\"}";

impl Default for LogFormat {
    fn default() -> Self {
        LogFormat::combined()
    }
}

impl LogFormat {
    /// The combined log format (the default).
    pub fn combined() -> LogFormat {
        let mut f = template(COMBINED, Escape::Default).unwrap_or_else(|_| LogFormat {
            source: String::new(),
            parts: Vec::new(),
            escape: Escape::Default,
        });
        // %b: "-" for no body, as the combined format has always been written here.
        for p in &mut f.parts {
            if *p == Part::Field(Field::BodyBytesSent) {
                *p = Part::Field(Field::BodyBytesClf);
            }
        }
        f.parts.push(Part::Field(Field::UpstreamSuffix));
        f.source = "combined".into();
        f
    }

    /// `combined`, `json`, or a template; the error says what is wrong.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "combined" => Ok(LogFormat::combined()),
            "json" => {
                let mut f = template(JSON, Escape::Json)?;
                f.source = "json".into();
                Ok(f)
            }
            t => template(t, Escape::Default),
        }
    }

    /// How many late fields the format has.
    pub fn late_fields(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p, Part::Field(f) if f.is_late()))
            .count()
    }
}

fn field(name: &str) -> Result<Field, String> {
    Ok(match name {
        "remote_addr" => Field::RemoteAddr,
        "remote_user" => Field::RemoteUser,
        "remote_port" => Field::RemotePort,
        "time_local" => Field::TimeLocal,
        "request" => Field::Request,
        "request_method" => Field::RequestMethod,
        "request_uri" => Field::RequestUri,
        "status" => Field::Status,
        "body_bytes_sent" => Field::BodyBytesSent,
        "request_time" => Field::RequestTime,
        "bytes_received" => Field::BytesReceived,
        "upstream_addr" => Field::UpstreamAddr,
        "upstream_response_time" => Field::UpstreamResponseTime,
        "tls_version" => Field::TlsVersion,
        n => match n.strip_prefix("http_") {
            Some(h) if !h.is_empty() => Field::Header(h.replace('_', "-")),
            _ => {
                return Err(format!(
                    "unknown field ${n} (known: $remote_addr, $remote_port, $remote_user, $time_local, \
                     $request, $request_method, $request_uri, $status, $body_bytes_sent, \
                     $request_time, $bytes_received, $http_<name>, $upstream_addr, $upstream_response_time, \
                     $tls_version)"
                ))
            }
        },
    })
}

fn template(s: &str, escape: Escape) -> Result<LogFormat, String> {
    if s.contains(['\n', '\r', '\0']) {
        return Err("access_log_format must not contain a line break or NUL".into());
    }
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] != b'$' {
            lit.push(b[i]);
            i += 1;
            continue;
        }
        let (name, next) = if b.get(i + 1) == Some(&b'{') {
            let Some(end) = s[i + 2..].find('}') else {
                return Err(format!("'${{' at byte {i} has no closing '}}'"));
            };
            (&s[i + 2..i + 2 + end], i + 3 + end)
        } else {
            let len = b[i + 1..].iter().take_while(|c| is_name(**c)).count();
            (&s[i + 1..i + 1 + len], i + 1 + len)
        };
        if name.is_empty() {
            // A '$' not followed by a name is text.
            lit.push(b'$');
            i += 1;
            continue;
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut lit)));
        }
        parts.push(Part::Field(field(name)?));
        i = next;
    }
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    let f = LogFormat {
        source: s.to_string(),
        parts,
        escape,
    };
    if f.late_fields() > MAX_LATE {
        return Err(format!(
            "access_log_format has more than {MAX_LATE} fields known only at the end of a \
             response ($body_bytes_sent, $request_time, $bytes_received, $upstream_addr, \
             $upstream_response_time)"
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_both_directions_of_a_tunnel() {
        let f = LogFormat::parse("json").unwrap();
        assert!(f.parts.contains(&Part::Field(Field::BodyBytesSent)));
        assert!(f.parts.contains(&Part::Field(Field::BytesReceived)));
        assert!(f.late_fields() <= MAX_LATE);
    }

    #[test]
    fn templates_compile_into_parts() {
        let f = LogFormat::parse("$remote_addr [${status}x] $http_x_forwarded_for $ $").unwrap();
        assert_eq!(
            f.parts,
            vec![
                Part::Field(Field::RemoteAddr),
                Part::Literal(b" [".to_vec()),
                Part::Field(Field::Status),
                Part::Literal(b"x] ".to_vec()),
                Part::Field(Field::Header("x-forwarded-for".into())),
                Part::Literal(b" $ $".to_vec()),
            ]
        );
        assert!(LogFormat::parse("$nope")
            .unwrap_err()
            .contains("unknown field $nope"));
        assert!(LogFormat::parse("${status").is_err());
        assert!(LogFormat::parse("a\nb").is_err());
        // The limit of late fields (6: room for every late field once) holds exactly.
        assert!(LogFormat::parse(&"$request_time ".repeat(MAX_LATE + 1)).is_err());
        assert!(LogFormat::parse(&"$request_time ".repeat(MAX_LATE)).is_ok());
        assert!(LogFormat::parse(&"$request_time ".repeat(4)).is_ok());
        assert_eq!(LogFormat::parse("json").unwrap().escape, Escape::Json);
        assert_eq!(LogFormat::parse("combined").unwrap(), LogFormat::combined());
    }
}
