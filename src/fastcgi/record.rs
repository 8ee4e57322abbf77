//! FastCGI 1.0 records: encoders for what a web server sends, an incremental decoder for what a
//! responder sends back, and the name-value pair format of PARAMS and GET_VALUES.
//!
//! Sans-IO: encoders append to a `Vec<u8>`, the decoder takes whatever bytes have arrived and
//! hands content back as borrowed slices, so the worker loop owns the sockets and no record is
//! ever buffered whole (a STDOUT record may be 64 KiB; we pass it on as it trickles in).
//!
//! We always encode with no padding (the specification only recommends 8-byte alignment) and
//! accept any padding when decoding.

use thiserror::Error;

/// The only protocol version there is.
pub const VERSION_1: u8 = 1;
/// Length of a record header.
pub const HEADER_LEN: usize = 8;
/// The largest content a record can carry (its length field is 16 bits).
pub const MAX_CONTENT: usize = 0xffff;

/// Record type: server → application, starts a request.
pub const BEGIN_REQUEST: u8 = 1;
/// Record type: server → application, aborts a request.
pub const ABORT_REQUEST: u8 = 2;
/// Record type: application → server, the request is over.
pub const END_REQUEST: u8 = 3;
/// Record type: server → application, the CGI environment as name-value pairs.
pub const PARAMS: u8 = 4;
/// Record type: server → application, the request body.
pub const STDIN: u8 = 5;
/// Record type: application → server, the CGI response.
pub const STDOUT: u8 = 6;
/// Record type: application → server, error output for the log.
pub const STDERR: u8 = 7;
/// Record type: server → application, the filter role's file data.
pub const DATA: u8 = 8;
/// Record type: management query for application variables.
pub const GET_VALUES: u8 = 9;
/// Record type: management answer to GET_VALUES.
pub const GET_VALUES_RESULT: u8 = 10;
/// Record type: management answer to a management record of a type the application lacks.
pub const UNKNOWN_TYPE: u8 = 11;

/// Role in BEGIN_REQUEST: the application produces the response (the only role we use).
pub const RESPONDER: u16 = 1;
/// Role in BEGIN_REQUEST: the application authorizes the request.
pub const AUTHORIZER: u16 = 2;
/// Role in BEGIN_REQUEST: the application filters a file.
pub const FILTER: u16 = 3;

/// BEGIN_REQUEST flag: keep the connection open after the request.
pub const KEEP_CONN: u8 = 1;

/// END_REQUEST protocol status: normal end.
pub const REQUEST_COMPLETE: u8 = 0;
/// END_REQUEST protocol status: the application does not multiplex and is busy on this connection.
pub const CANT_MPX_CONN: u8 = 1;
/// END_REQUEST protocol status: the application is out of some resource.
pub const OVERLOADED: u8 = 2;
/// END_REQUEST protocol status: the application does not play the requested role.
pub const UNKNOWN_ROLE: u8 = 3;

/// The largest name or value length the 4-byte length form can express.
pub const MAX_PAIR_LEN: usize = 0x7fff_ffff;

/// Why records or name-value pairs could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    /// A record header with a version other than 1: the stream is not FastCGI (or is lost).
    #[error("FastCGI record with version {0}")]
    Version(u8),
    /// An END_REQUEST record whose content is shorter than its 8-byte body.
    #[error("END_REQUEST record too short")]
    ShortEndRequest,
    /// A name or value longer than [`MAX_PAIR_LEN`].
    #[error("FastCGI name or value too long")]
    TooLong,
    /// Name-value pair data that ends inside a length or a name or value.
    #[error("truncated FastCGI name-value pair")]
    Truncated,
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version (1).
    pub version: u8,
    /// Record type.
    pub rtype: u8,
    /// Request id (0 for management records).
    pub id: u16,
    /// Content length.
    pub content_len: u16,
    /// Padding length after the content.
    pub padding_len: u8,
}

impl Header {
    /// Reads a header from its 8 bytes (the version is not checked here).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: b[0],
            rtype: b[1],
            id: u16::from_be_bytes([b[2], b[3]]),
            content_len: u16::from_be_bytes([b[4], b[5]]),
            padding_len: b[6],
        }
    }
}

/// Appends a record header with no padding.
pub fn header(out: &mut Vec<u8>, rtype: u8, id: u16, content_len: u16) {
    let [ih, il] = id.to_be_bytes();
    let [lh, ll] = content_len.to_be_bytes();
    out.extend_from_slice(&[VERSION_1, rtype, ih, il, lh, ll, 0, 0]);
}

/// Appends `data` as records of type `rtype`, split at [`MAX_CONTENT`]; nothing for empty data
/// (an empty record would mean end of stream).
pub fn stream(out: &mut Vec<u8>, rtype: u8, id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT) {
        // chunks() yields at most MAX_CONTENT bytes, which fits u16.
        header(out, rtype, id, chunk.len() as u16);
        out.extend_from_slice(chunk);
    }
}

/// Appends a BEGIN_REQUEST record for the responder role.
pub fn begin_request(out: &mut Vec<u8>, id: u16, keep_conn: bool) {
    header(out, BEGIN_REQUEST, id, 8);
    let [rh, rl] = RESPONDER.to_be_bytes();
    let flags = if keep_conn { KEEP_CONN } else { 0 };
    out.extend_from_slice(&[rh, rl, flags, 0, 0, 0, 0, 0]);
}

/// Appends an ABORT_REQUEST record.
pub fn abort_request(out: &mut Vec<u8>, id: u16) {
    header(out, ABORT_REQUEST, id, 0);
}

/// Appends the name-value pairs as PARAMS records of at most [`MAX_CONTENT`] bytes each (a pair
/// may straddle two records, as the specification allows), then the empty PARAMS record that
/// ends the stream.
pub fn params<'p>(
    out: &mut Vec<u8>,
    id: u16,
    pairs: impl Iterator<Item = (&'p [u8], &'p [u8])>,
) -> Result<(), RecordError> {
    let start = out.len();
    let mut w = StreamWriter::new(out, PARAMS, id);
    for (name, value) in pairs {
        let mut lens = Vec::with_capacity(8);
        if let Err(e) = pair_lengths(&mut lens, name.len(), value.len()) {
            // Leave `out` as it was: half a PARAMS stream would be worse than none.
            w.out.truncate(start);
            return Err(e);
        }
        w.push(&lens);
        w.push(name);
        w.push(value);
    }
    w.finish();
    header(out, PARAMS, id, 0);
    Ok(())
}

/// Appends STDIN records carrying `data`; nothing for empty data (see [`stdin_end`]).
pub fn stdin(out: &mut Vec<u8>, id: u16, data: &[u8]) {
    stream(out, STDIN, id, data);
}

/// Appends only the header of a STDIN record of `len` bytes, for a caller that writes the
/// payload itself (e.g. straight from its read buffer). `len` must not be 0: that is
/// [`stdin_end`].
pub fn stdin_header(out: &mut Vec<u8>, id: u16, len: u16) {
    header(out, STDIN, id, len);
}

/// Appends the empty STDIN record that ends the request body.
pub fn stdin_end(out: &mut Vec<u8>, id: u16) {
    header(out, STDIN, id, 0);
}

/// Appends STDOUT records (application side, used by the test backend).
pub fn stdout(out: &mut Vec<u8>, id: u16, data: &[u8]) {
    stream(out, STDOUT, id, data);
}

/// Appends STDERR records (application side, used by the test backend).
pub fn stderr(out: &mut Vec<u8>, id: u16, data: &[u8]) {
    stream(out, STDERR, id, data);
}

/// Appends an END_REQUEST record (application side, used by the test backend).
pub fn end_request(out: &mut Vec<u8>, id: u16, app_status: u32, protocol_status: u8) {
    header(out, END_REQUEST, id, 8);
    let s = app_status.to_be_bytes();
    out.extend_from_slice(&[s[0], s[1], s[2], s[3], protocol_status, 0, 0, 0]);
}

/// Appends an UNKNOWN_TYPE management record (application side).
pub fn unknown_type(out: &mut Vec<u8>, rtype: u8) {
    header(out, UNKNOWN_TYPE, 0, 8);
    out.extend_from_slice(&[rtype, 0, 0, 0, 0, 0, 0, 0]);
}

/// Writes a stream of records whose content is pushed piece by piece, patching each header's
/// length when the record is full or the stream ends, so no temporary copy is needed.
struct StreamWriter<'o> {
    out: &'o mut Vec<u8>,
    rtype: u8,
    id: u16,
    /// Offset of the open record's header in `out`, if a record is open.
    open: Option<usize>,
}

impl<'o> StreamWriter<'o> {
    fn new(out: &'o mut Vec<u8>, rtype: u8, id: u16) -> Self {
        StreamWriter {
            out,
            rtype,
            id,
            open: None,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let at = match self.open {
                Some(at) if self.out.len() - at - HEADER_LEN < MAX_CONTENT => at,
                _ => {
                    self.finish();
                    let at = self.out.len();
                    header(self.out, self.rtype, self.id, 0);
                    self.open = Some(at);
                    at
                }
            };
            let room = MAX_CONTENT - (self.out.len() - at - HEADER_LEN);
            let n = room.min(bytes.len());
            self.out.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// Patches the open record's length and closes it.
    fn finish(&mut self) {
        if let Some(at) = self.open.take() {
            // push() never lets a record exceed MAX_CONTENT, so this fits u16.
            let len = (self.out.len() - at - HEADER_LEN) as u16;
            self.out[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
        }
    }
}

/// Appends the 1- or 4-byte length prefixes of one pair.
fn pair_lengths(out: &mut Vec<u8>, name_len: usize, value_len: usize) -> Result<(), RecordError> {
    for len in [name_len, value_len] {
        if len < 0x80 {
            out.push(len as u8);
        } else if len <= MAX_PAIR_LEN {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        } else {
            return Err(RecordError::TooLong);
        }
    }
    Ok(())
}

/// Appends one name-value pair (no record header), e.g. for a GET_VALUES_RESULT body.
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), RecordError> {
    pair_lengths(out, name.len(), value.len())?;
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Ok(())
}

/// Owned name-value pairs, in stream order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decodes a complete name-value pair stream (the concatenated content of a PARAMS stream).
pub fn decode_params(mut buf: &[u8]) -> Result<Pairs, RecordError> {
    fn len(buf: &mut &[u8]) -> Result<usize, RecordError> {
        let b: &[u8] = buf;
        match b.first() {
            Some(&n) if n < 0x80 => {
                *buf = &b[1..];
                Ok(n as usize)
            }
            Some(_) if b.len() >= 4 => {
                *buf = &b[4..];
                Ok((u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff) as usize)
            }
            _ => Err(RecordError::Truncated),
        }
    }
    fn take<'b>(buf: &mut &'b [u8], n: usize) -> Result<&'b [u8], RecordError> {
        if buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }
    let mut pairs = Vec::new();
    while !buf.is_empty() {
        let nl = len(&mut buf)?;
        let vl = len(&mut buf)?;
        let name = take(&mut buf, nl)?.to_vec();
        let value = take(&mut buf, vl)?.to_vec();
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// What the decoder found in the bytes given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Some STDOUT content (never empty; a record's content may come in several pieces).
    Stdout(&'a [u8]),
    /// Some STDERR content (never empty).
    Stderr(&'a [u8]),
    /// The END_REQUEST record, reported once the whole record including padding is consumed,
    /// so that the connection is at a record boundary.
    End {
        /// The application's exit status.
        app_status: u32,
        /// One of [`REQUEST_COMPLETE`], [`CANT_MPX_CONN`], [`OVERLOADED`], [`UNKNOWN_ROLE`].
        protocol_status: u8,
    },
}

/// Where the decoder is inside the current record.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting the 8 header bytes.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Inside content of a record we pass on (STDOUT or STDERR of our request).
    Content {
        rtype: u8,
        left: usize,
        padding: usize,
    },
    /// Inside an END_REQUEST of our request: collecting its 8-byte body, then skipping the rest.
    End {
        body: [u8; 8],
        have: usize,
        left: usize,
        padding: usize,
    },
    /// Skipping the rest of a record we ignore (or the padding of one we did not).
    Skip { left: usize },
}

/// Incremental decoder of the records an application sends for one request id.
///
/// Records of other ids (including management records) and of types a responder does not send
/// to a server are skipped.
#[derive(Debug, Clone)]
pub struct Decoder {
    id: u16,
    state: State,
    /// An END_REQUEST that has been fully read except for its padding.
    pending_end: Option<(u32, u8)>,
}

const FRESH_HEADER: State = State::Header {
    buf: [0; HEADER_LEN],
    have: 0,
};

impl Decoder {
    /// A decoder for the records of request `id`.
    pub fn new(id: u16) -> Self {
        Decoder {
            id,
            state: FRESH_HEADER,
            pending_end: None,
        }
    }

    /// Whether the decoder is between records (e.g. to know a kept connection is reusable).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. }) && self.pending_end.is_none()
    }

    /// Consumes a prefix of `input` and returns how many bytes it consumed and at most one event.
    ///
    /// When no event is returned, all of `input` was consumed; so a caller loops while input
    /// remains, handling each event. Content events borrow from `input`.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), RecordError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match &mut self.state {
                State::Header { buf, have } => {
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    let n = (HEADER_LEN - *have).min(rest.len());
                    buf[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    pos += n;
                    if *have == HEADER_LEN {
                        let h = Header::parse(buf);
                        if h.version != VERSION_1 {
                            return Err(RecordError::Version(h.version));
                        }
                        self.state = self.after_header(h)?;
                    }
                }
                State::Content {
                    rtype,
                    left,
                    padding,
                } => {
                    if *left == 0 {
                        self.state = State::Skip { left: *padding };
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    let n = (*left).min(rest.len());
                    *left -= n;
                    let data = &rest[..n];
                    let ev = if *rtype == STDOUT {
                        Event::Stdout(data)
                    } else {
                        Event::Stderr(data)
                    };
                    if *left == 0 {
                        self.state = State::Skip { left: *padding };
                    }
                    return Ok((pos + n, Some(ev)));
                }
                State::End {
                    body,
                    have,
                    left,
                    padding,
                } => {
                    if *have == body.len() {
                        let app_status = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                        self.pending_end = Some((app_status, body[4]));
                        // The content beyond the 8-byte body and the padding are skipped alike.
                        self.state = State::Skip {
                            left: *left + *padding,
                        };
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    let n = (body.len() - *have).min(rest.len());
                    body[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    pos += n;
                }
                State::Skip { left } => {
                    let n = (*left).min(rest.len());
                    *left -= n;
                    pos += n;
                    if *left > 0 {
                        return Ok((pos, None));
                    }
                    self.state = FRESH_HEADER;
                    if let Some((app_status, protocol_status)) = self.pending_end.take() {
                        return Ok((
                            pos,
                            Some(Event::End {
                                app_status,
                                protocol_status,
                            }),
                        ));
                    }
                }
            }
        }
    }

    /// The state for the content of a record with header `h`.
    fn after_header(&self, h: Header) -> Result<State, RecordError> {
        let content = h.content_len as usize;
        let padding = h.padding_len as usize;
        if h.id != self.id {
            return Ok(State::Skip {
                left: content + padding,
            });
        }
        Ok(match h.rtype {
            // An empty STDOUT/STDERR record only marks the end of that stream.
            STDOUT | STDERR => State::Content {
                rtype: h.rtype,
                left: content,
                padding,
            },
            END_REQUEST => {
                if content < 8 {
                    return Err(RecordError::ShortEndRequest);
                }
                State::End {
                    body: [0; 8],
                    have: 0,
                    left: content - 8,
                    padding,
                }
            }
            _ => State::Skip {
                left: content + padding,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with explicit padding, for decoder tests.
    fn rec(rtype: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
        let mut v = Vec::new();
        header(&mut v, rtype, id, content.len() as u16);
        v[6] = padding;
        v.extend_from_slice(content);
        v.extend(std::iter::repeat_n(0xAA, padding as usize));
        v
    }

    #[derive(Debug, Default, PartialEq)]
    struct Collected {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        end: Option<(u32, u8)>,
        events: usize,
    }

    /// Feeds `input` in pieces of `step` bytes, collecting events.
    fn feed(dec: &mut Decoder, input: &[u8], step: usize) -> Result<Collected, RecordError> {
        let mut c = Collected::default();
        for piece in input.chunks(step.max(1)) {
            let mut piece = piece;
            while !piece.is_empty() {
                let (n, ev) = dec.decode(piece)?;
                assert!(n > 0 || ev.is_some(), "no progress");
                assert!(ev.is_some() || n == piece.len(), "stopped without event");
                piece = &piece[n..];
                match ev {
                    Some(Event::Stdout(d)) => {
                        assert!(!d.is_empty());
                        c.stdout.extend_from_slice(d)
                    }
                    Some(Event::Stderr(d)) => {
                        assert!(!d.is_empty());
                        c.stderr.extend_from_slice(d)
                    }
                    Some(Event::End {
                        app_status,
                        protocol_status,
                    }) => {
                        assert!(c.end.is_none());
                        c.end = Some((app_status, protocol_status))
                    }
                    None => continue,
                }
                c.events += 1;
            }
        }
        Ok(c)
    }

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(rec(STDOUT, 1, b"Content-Type: text/plain\r\n\r\n", 3));
        v.extend(rec(STDERR, 1, b"warn", 0));
        v.extend(rec(STDOUT, 2, b"other request", 1)); // skipped: other id
        v.extend(rec(GET_VALUES_RESULT, 0, b"\x0e\x01FCGI_MAX_CONNS1", 0));
        v.extend(rec(UNKNOWN_TYPE, 0, &[42, 0, 0, 0, 0, 0, 0, 0], 0));
        v.extend(rec(99, 1, b"unknown type", 5)); // skipped: unknown type
        v.extend(rec(STDOUT, 1, b"", 7)); // empty: no event
        v.extend(rec(STDOUT, 1, b"hello", 255));
        v.extend(rec(STDOUT, 1, b"", 0));
        v.extend(rec(STDERR, 1, b"", 0));
        let mut end = Vec::new();
        end_request(&mut end, 1, 7, REQUEST_COMPLETE);
        end[6] = 4;
        end.extend_from_slice(&[0; 4]);
        v.extend(end);
        v
    }

    #[test]
    fn decodes_at_every_split() {
        let input = sample();
        for step in [1, 2, 3, 5, 7, 8, 9, 13, 64, input.len()] {
            let mut dec = Decoder::new(1);
            let c = feed(&mut dec, &input, step).unwrap();
            assert_eq!(
                c.stdout, b"Content-Type: text/plain\r\n\r\nhello",
                "step {step}"
            );
            assert_eq!(c.stderr, b"warn");
            assert_eq!(c.end, Some((7, REQUEST_COMPLETE)));
            assert!(dec.at_boundary());
        }
    }

    #[test]
    fn every_two_way_split() {
        let input = sample();
        for cut in 0..=input.len() {
            let mut dec = Decoder::new(1);
            let mut c = feed(&mut dec, &input[..cut], input.len()).unwrap();
            let c2 = feed(&mut dec, &input[cut..], input.len()).unwrap();
            c.stdout.extend(c2.stdout);
            c.stderr.extend(c2.stderr);
            assert_eq!(c.stdout, b"Content-Type: text/plain\r\n\r\nhello");
            assert_eq!(c.stderr, b"warn");
            assert_eq!(c.end.or(c2.end), Some((7, REQUEST_COMPLETE)));
        }
    }

    #[test]
    fn multiple_events_in_one_buffer() {
        let input = sample();
        let mut dec = Decoder::new(1);
        let (n, ev) = dec.decode(&input).unwrap();
        assert_eq!(ev, Some(Event::Stdout(b"Content-Type: text/plain\r\n\r\n")));
        let (_, ev) = dec.decode(&input[n..]).unwrap();
        assert_eq!(ev, Some(Event::Stderr(b"warn")));
    }

    #[test]
    fn end_waits_for_padding() {
        let mut v = Vec::new();
        end_request(&mut v, 1, 0, REQUEST_COMPLETE);
        v[6] = 3;
        let mut dec = Decoder::new(1);
        assert_eq!(dec.decode(&v).unwrap(), (16, None));
        assert!(!dec.at_boundary());
        let (n, ev) = dec.decode(&[0, 0, 0]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            ev,
            Some(Event::End {
                app_status: 0,
                protocol_status: 0
            })
        );
        assert!(dec.at_boundary());
    }

    #[test]
    fn long_end_request_body_is_skipped() {
        let mut dec = Decoder::new(1);
        let c = feed(
            &mut dec,
            &rec(END_REQUEST, 1, &[0, 0, 1, 0, 2, 0, 0, 0, 9, 9], 1),
            1,
        )
        .unwrap();
        assert_eq!(c.end, Some((256, OVERLOADED)));
    }

    #[test]
    fn errors() {
        let mut bad = rec(STDOUT, 1, b"x", 0);
        bad[0] = 2;
        assert_eq!(Decoder::new(1).decode(&bad), Err(RecordError::Version(2)));
        assert_eq!(
            Decoder::new(1).decode(&rec(END_REQUEST, 1, &[0; 7], 0)),
            Err(RecordError::ShortEndRequest)
        );
        // A short END_REQUEST for another id is just skipped.
        assert_eq!(
            Decoder::new(1).decode(&rec(END_REQUEST, 2, &[0; 7], 0)),
            Ok((15, None))
        );
    }

    #[test]
    fn decoder_never_panics_on_noise() {
        // A cheap deterministic generator: every byte pattern family gets exercised.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut buf = [0u8; 64];
            for b in buf.iter_mut() {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (x >> 16) as u8;
            }
            buf[0] = 1;
            let mut dec = Decoder::new(1);
            let mut input = &buf[..];
            while !input.is_empty() {
                match dec.decode(input) {
                    Ok((n, _)) => input = &input[n..],
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn begin_and_abort() {
        let mut v = Vec::new();
        begin_request(&mut v, 0x0102, true);
        assert_eq!(v, [1, 1, 1, 2, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        v.clear();
        begin_request(&mut v, 1, false);
        assert_eq!(v[10], 0);
        v.clear();
        abort_request(&mut v, 3);
        assert_eq!(v, [1, 2, 0, 3, 0, 0, 0, 0]);
    }

    /// Splits an encoded stream into (type, id, content) records.
    fn records(mut v: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !v.is_empty() {
            let h = Header::parse(v[..8].try_into().unwrap());
            let c = h.content_len as usize;
            out.push((h.rtype, h.id, v[8..8 + c].to_vec()));
            v = &v[8 + c + h.padding_len as usize..];
        }
        out
    }

    #[test]
    fn stdin_splits_and_ends() {
        let mut v = Vec::new();
        stdin(&mut v, 5, b"");
        assert!(v.is_empty());
        let data: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
        stdin(&mut v, 5, &data);
        stdin_end(&mut v, 5);
        let r = records(&v);
        let lens: Vec<usize> = r.iter().map(|(_, _, c)| c.len()).collect();
        assert_eq!(lens, [65535, 65535, 150_000 - 131_070, 0]);
        assert!(r.iter().all(|(t, id, _)| *t == STDIN && *id == 5));
        let joined: Vec<u8> = r.iter().flat_map(|(_, _, c)| c.clone()).collect();
        assert_eq!(joined, data);

        let mut h = Vec::new();
        stdin_header(&mut h, 5, 300);
        assert_eq!(h, [1, 5, 0, 5, 1, 44, 0, 0]);
    }

    #[test]
    fn params_round_trip_and_split() {
        let big = vec![b'v'; 100_000];
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b"A", b"1"),
            (b"EMPTY", b""),
            (b"BIG", &big),
            (&[b'n'; 200], b"x"),
        ];
        let mut v = Vec::new();
        params(&mut v, 9, pairs.iter().copied()).unwrap();
        let r = records(&v);
        assert!(r
            .iter()
            .all(|(t, id, c)| *t == PARAMS && *id == 9 && c.len() <= 65535));
        assert_eq!(r.last().map(|x| x.2.len()), Some(0));
        assert_eq!(r.len(), 3);
        let joined: Vec<u8> = r.iter().flat_map(|(_, _, c)| c.clone()).collect();
        let decoded = decode_params(&joined).unwrap();
        assert_eq!(decoded.len(), 4);
        for ((n, val), (en, ev)) in decoded.iter().zip(pairs.iter()) {
            assert_eq!(&n[..], *en);
            assert_eq!(&val[..], *ev);
        }
        // Length forms: 127 is one byte, 128 takes four.
        let mut e = Vec::new();
        encode_pair(&mut e, &[b'a'; 127], &[b'b'; 128]).unwrap();
        assert_eq!(&e[..5], &[127, 0x80, 0, 0, 128]);

        // No pairs: just the terminator.
        let mut v = Vec::new();
        params(&mut v, 1, std::iter::empty()).unwrap();
        assert_eq!(v, [1, 4, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn decode_params_truncated() {
        assert_eq!(decode_params(b""), Ok(vec![]));
        assert_eq!(decode_params(b"\x01"), Err(RecordError::Truncated));
        assert_eq!(decode_params(b"\x01\x02ab"), Err(RecordError::Truncated));
        assert_eq!(decode_params(b"\x80\x00"), Err(RecordError::Truncated));
        assert_eq!(
            decode_params(b"\xff\xff\xff\xff\x00"),
            Err(RecordError::Truncated)
        );
        assert_eq!(
            decode_params(b"\x01\x02abc"),
            Ok(vec![(b"a".to_vec(), b"bc".to_vec())])
        );
    }
}
