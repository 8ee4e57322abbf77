//! The admin evaluator process: forked by the watcher, it runs admin chunks so that no Lua
//! ever runs in the watcher. A chunk that stalls (a looping `xpcall` handler, a pattern match
//! on a large string) stalls only this process; the watcher kills it past its time limit and
//! forks a fresh one.
//!
//! The loop is blocking and strictly ping-pong (see [`super::wire`]): read one message, run
//! Lua until the chunk ends or asks the watcher something, write one message.

use super::protocol::{
    encode_frame, encode_frame_within, error_response, read_frame_within, ProtocolError,
};
use super::sandbox::{Sandbox, Step};
use super::wire::{FromEvaluator, ToEvaluator, WIRE_MAX};
use std::os::unix::net::UnixStream;

/// Serves the watcher on `stream` until it closes the link; returns the exit code.
pub fn run(mut stream: UnixStream) -> i32 {
    let mut sandbox = match Sandbox::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("admin evaluator: cannot create the Lua state: {e}");
            return 1;
        }
    };
    loop {
        let message = match read_frame_within(&mut stream, WIRE_MAX) {
            Ok(v) => v,
            // The watcher closed the link: it is exiting, or it replaced us.
            Err(ProtocolError::Closed) => return 0,
            Err(e) => {
                tracing::error!("admin evaluator: reading from the watcher: {e}");
                return 1;
            }
        };
        let (id, step) = match ToEvaluator::from_json(&message) {
            Ok(ToEvaluator::Eval { id, chunk }) => (id, sandbox.start(id, &chunk)),
            Ok(ToEvaluator::Reply { id, result }) => match sandbox.resume(id, result) {
                Some(step) => (id, step),
                None => {
                    tracing::error!(
                        "admin evaluator: a reply for chunk {id}, which is not waiting"
                    );
                    return 1;
                }
            },
            Err(e) => {
                tracing::error!("admin evaluator: {e}");
                return 1;
            }
        };
        let answer = match step {
            Step::Call(call) => FromEvaluator::Call { id, call },
            Step::Done(response) => FromEvaluator::Done {
                id,
                response: fit(response),
            },
        };
        if let Err(e) = write_frame_within(&mut stream, &answer.to_json()) {
            tracing::error!("admin evaluator: writing to the watcher: {e}");
            return 1;
        }
    }
}

/// A response too large for the client's frame becomes an error response here, so that the
/// link never carries more than a client frame can.
fn fit(response: serde_json::Value) -> serde_json::Value {
    match encode_frame(&response) {
        Ok(_) => response,
        Err(e) => error_response(&format!("the answer is too large to send: {e}")),
    }
}

fn write_frame_within(
    stream: &mut UnixStream,
    value: &serde_json::Value,
) -> Result<(), ProtocolError> {
    let bytes = encode_frame_within(value, WIRE_MAX)?;
    std::io::Write::write_all(stream, &bytes)?;
    Ok(())
}
