//! The messages between the watcher and its admin evaluator process, over a socketpair.
//!
//! Frames as in [`super::protocol`] (4-byte length, one JSON document), up to [`WIRE_MAX`].
//! The evaluator is strictly ping-pong: it reads one message, runs Lua until the chunk ends or
//! asks the watcher something, and writes one message back. So the watcher always knows whether
//! Lua is running, and for which chunk (that is what its wall-clock limit measures).
//!
//! ```text
//! watcher → evaluator   {"eval":"<chunk>","id":7}
//!                       {"reply":7,"ok":true,"value":<json>} | {"reply":7,"ok":false,"error":"…"}
//! evaluator → watcher   {"call":"status","id":7}       (also workers, backends, config,
//!                                                       reload, reopen_logs)
//!                       {"call":"shutdown","id":7,"timeout":<seconds|null>,"now":false}
//!                       {"done":7,"response":{"ok":…}}  (the client's response, output included)
//! ```

use super::protocol::{error_response, ok_response, parse_response, MAX_FRAME};
use serde_json::{json, Value};
use std::time::Duration;

/// The largest message on the link: a client's chunk of up to [`MAX_FRAME`] bytes may grow
/// when escaped again, and a response of up to [`MAX_FRAME`] gets a small envelope.
pub const WIRE_MAX: usize = 8 * MAX_FRAME;

/// What an admin function asks the watcher for: read its state, or act on the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `status()`.
    Status,
    /// `workers()`.
    Workers,
    /// `backends()`.
    Backends,
    /// `config()`.
    Config,
    /// `shutdown{...}`: a graceful stop with this deadline (the config's when None), or `now`.
    Shutdown {
        /// The drain deadline.
        timeout: Option<Duration>,
        /// Stop at once.
        now: bool,
    },
    /// `reload()`: answered once the new generation runs, or with the reason it did not.
    Reload,
    /// `reopen_logs()`.
    ReopenLogs,
    /// `drain("app", "127.0.0.1:3001")`: no new requests to that upstream address.
    Drain {
        /// The upstream's name.
        upstream: String,
        /// The address as written in the config.
        address: String,
    },
    /// `enable("app", "127.0.0.1:3001")`: undoes `drain`.
    Enable {
        /// The upstream's name.
        upstream: String,
        /// The address as written in the config.
        address: String,
    },
    /// `certificates()`: the TLS certificates loaded, with names, issuer and expiry.
    Certificates,
}

impl Call {
    /// The name of the admin function.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Status => "status",
            Call::Workers => "workers",
            Call::Backends => "backends",
            Call::Config => "config",
            Call::Shutdown { .. } => "shutdown",
            Call::Reload => "reload",
            Call::ReopenLogs => "reopen_logs",
            Call::Drain { .. } => "drain",
            Call::Enable { .. } => "enable",
            Call::Certificates => "certificates",
        }
    }

    /// The call without arguments named `name`.
    pub fn simple(name: &str) -> Option<Call> {
        Some(match name {
            "status" => Call::Status,
            "workers" => Call::Workers,
            "backends" => Call::Backends,
            "config" => Call::Config,
            "reload" => Call::Reload,
            "reopen_logs" => Call::ReopenLogs,
            "certificates" => Call::Certificates,
            _ => return None,
        })
    }
}

/// A message from the watcher to the evaluator.
#[derive(Debug, Clone, PartialEq)]
pub enum ToEvaluator {
    /// Run a new chunk.
    Eval {
        /// The chunk's id (the watcher's, unique while it runs).
        id: u64,
        /// The Lua text.
        chunk: String,
    },
    /// The answer to the chunk's pending [`Call`].
    Reply {
        /// The chunk's id.
        id: u64,
        /// The value, or why the watcher refused.
        result: Result<Value, String>,
    },
}

/// A message from the evaluator to the watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum FromEvaluator {
    /// Chunk `id` waits for the answer to this call.
    Call {
        /// The chunk's id.
        id: u64,
        /// What it asks.
        call: Call,
    },
    /// Chunk `id` ended; `response` is what its client receives.
    Done {
        /// The chunk's id.
        id: u64,
        /// `{"ok":…}` as in the client protocol.
        response: Value,
    },
}

/// A message that is not one of the above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage(pub String);

impl std::fmt::Display for BadMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad message on the admin evaluator link: {}", self.0)
    }
}

fn id_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

impl ToEvaluator {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        match self {
            ToEvaluator::Eval { id, chunk } => json!({"eval": chunk, "id": id}),
            ToEvaluator::Reply { id, result } => {
                let mut v = match result {
                    Ok(value) => ok_response(value.clone()),
                    Err(e) => error_response(e),
                };
                v["reply"] = json!(id);
                v
            }
        }
    }

    /// From JSON.
    pub fn from_json(v: &Value) -> Result<ToEvaluator, BadMessage> {
        let bad = || BadMessage(truncated(v));
        if let Some(chunk) = v.get("eval").and_then(Value::as_str) {
            let id = id_of(v, "id").ok_or_else(bad)?;
            return Ok(ToEvaluator::Eval {
                id,
                chunk: chunk.to_string(),
            });
        }
        let id = id_of(v, "reply").ok_or_else(bad)?;
        let result = parse_response(v).map_err(|_| bad())?;
        Ok(ToEvaluator::Reply { id, result })
    }
}

impl FromEvaluator {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        match self {
            FromEvaluator::Done { id, response } => json!({"done": id, "response": response}),
            FromEvaluator::Call { id, call } => {
                let mut v = json!({"call": call.name(), "id": id});
                if let Call::Shutdown { timeout, now } = call {
                    v["timeout"] = json!(timeout.map(|t| t.as_secs_f64()));
                    v["now"] = json!(now);
                }
                if let Call::Drain { upstream, address } | Call::Enable { upstream, address } = call
                {
                    v["upstream"] = json!(upstream);
                    v["address"] = json!(address);
                }
                v
            }
        }
    }

    /// From JSON.
    pub fn from_json(v: &Value) -> Result<FromEvaluator, BadMessage> {
        let bad = || BadMessage(truncated(v));
        if let Some(id) = id_of(v, "done") {
            let response = v.get("response").cloned().ok_or_else(bad)?;
            return Ok(FromEvaluator::Done { id, response });
        }
        let name = v.get("call").and_then(Value::as_str).ok_or_else(bad)?;
        let id = id_of(v, "id").ok_or_else(bad)?;
        let call = match name {
            "shutdown" => {
                let timeout = match v.get("timeout") {
                    None | Some(Value::Null) => None,
                    Some(t) => match t.as_f64() {
                        Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                        _ => return Err(bad()),
                    },
                };
                let now = v.get("now").and_then(Value::as_bool).unwrap_or(false);
                Call::Shutdown { timeout, now }
            }
            "drain" | "enable" => {
                let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                let (Some(upstream), Some(address)) = (field("upstream"), field("address")) else {
                    return Err(bad());
                };
                if name == "drain" {
                    Call::Drain { upstream, address }
                } else {
                    Call::Enable { upstream, address }
                }
            }
            other => Call::simple(other).ok_or_else(bad)?,
        };
        Ok(FromEvaluator::Call { id, call })
    }
}

fn truncated(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let to = [
            ToEvaluator::Eval {
                id: 3,
                chunk: "workers()".into(),
            },
            ToEvaluator::Reply {
                id: 4,
                result: Ok(json!({"a": [1, 2]})),
            },
            ToEvaluator::Reply {
                id: 5,
                result: Err("reload: the server is stopping".into()),
            },
        ];
        for m in to {
            assert_eq!(ToEvaluator::from_json(&m.to_json()), Ok(m.clone()), "{m:?}");
        }
        let from = [
            FromEvaluator::Call {
                id: 1,
                call: Call::Reload,
            },
            FromEvaluator::Call {
                id: 2,
                call: Call::Shutdown {
                    timeout: Some(Duration::from_millis(1500)),
                    now: false,
                },
            },
            FromEvaluator::Call {
                id: 2,
                call: Call::Shutdown {
                    timeout: None,
                    now: true,
                },
            },
            FromEvaluator::Done {
                id: 9,
                response: ok_response(json!(2)),
            },
        ];
        for m in from {
            assert_eq!(
                FromEvaluator::from_json(&m.to_json()),
                Ok(m.clone()),
                "{m:?}"
            );
        }
        for name in ["status", "workers", "backends", "config", "reopen_logs"] {
            let call = Call::simple(name).expect(name);
            assert_eq!(call.name(), name);
        }
    }

    #[test]
    fn bad_messages_are_errors() {
        for v in [
            json!({}),
            json!({"eval": 1, "id": 1}),
            json!({"eval": "x"}),
            json!({"reply": 1}),
        ] {
            assert!(ToEvaluator::from_json(&v).is_err(), "{v}");
        }
        for v in [
            json!({"call": "rm", "id": 1}),
            json!({"call": "status"}),
            json!({"call": "shutdown", "id": 1, "timeout": -1}),
            json!({"done": 1}),
        ] {
            assert!(FromEvaluator::from_json(&v).is_err(), "{v}");
        }
    }
}
