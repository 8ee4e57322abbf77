//! A connection's real client when a proxy stands in front: the PROXY protocol header read
//! first on a marked listener, and `X-Forwarded-For` from a trusted peer per request
//! (`src/proxy_protocol.rs`, `src/real_ip.rs` hold the parsing). Boxed in the connection and
//! made only when needed, so a plain connection pays one pointer.

use super::peer::{Peer, PeerIp};
use crate::http::request::Request;
use crate::proxy_protocol::Header;
use crate::real_ip::{self, Cidr};
use std::net::SocketAddr;

/// Whether the PROXY header is still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProxyHeader {
    /// The listener expects one and it has not arrived whole.
    Awaited,
    /// Read (or none expected).
    Read,
}

/// Who the client is beyond the socket's peer.
#[derive(Debug)]
pub(super) struct RealPeer {
    /// The PROXY header's state.
    pub header: ProxyHeader,
    /// The connection's client: the socket's peer, or the PROXY header's source when believed.
    pub origin: Peer,
    /// The current request's client: `origin`, or what a trusted X-Forwarded-For says.
    pub client: Peer,
}

fn peer_of(addr: SocketAddr) -> Peer {
    Peer {
        ip: PeerIp::of(&addr),
        port: addr.port(),
    }
}

/// A connection on a PROXY listener, before its header.
pub(super) fn awaiting(socket_peer: Peer) -> Box<RealPeer> {
    Box::new(RealPeer {
        header: ProxyHeader::Awaited,
        origin: socket_peer,
        client: socket_peer,
    })
}

impl RealPeer {
    /// The header arrived: its source is believed when `trusted` is empty (the listener's
    /// mark is the trust) or names the socket's peer.
    pub fn header_read(&mut self, h: Header, socket_peer: &Peer, trusted: &[Cidr]) {
        self.header = ProxyHeader::Read;
        let believed = trusted.is_empty() || real_ip::is_trusted(trusted, &socket_peer.ip);
        if let (Some(src), true) = (h.source, believed) {
            self.origin = peer_of(src);
            self.client = self.origin;
        }
    }
}

/// Sets the client of `req` (X-Forwarded-For from a trusted origin), making `real` if needed.
pub(super) fn for_request(
    real: &mut Option<Box<RealPeer>>,
    socket_peer: &Peer,
    req: &Request,
    trusted: &[Cidr],
) {
    if trusted.is_empty() && real.is_none() {
        return;
    }
    let origin = real.as_ref().map_or(*socket_peer, |r| r.origin);
    // Several header lines are one list in order (RFC 9110 §5.3): the nearest proxy's entry is
    // at the end of the last line.
    let mut lines = req
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"))
        .map(|(_, v)| v);
    let first = lines.next();
    let joined: Option<Vec<u8>> = match lines.next() {
        None => None,
        Some(second) => {
            let mut all = first.unwrap_or_default().to_vec();
            for v in std::iter::once(second).chain(lines) {
                all.push(b',');
                all.extend_from_slice(v);
            }
            Some(all)
        }
    };
    let xff = joined.as_deref().or(first);
    match real_ip::from_forwarded_for(trusted, &origin.ip, xff) {
        Some(ip) => {
            let r = real.get_or_insert_with(|| {
                Box::new(RealPeer {
                    header: ProxyHeader::Read,
                    origin,
                    client: origin,
                })
            });
            r.client = peer_of(SocketAddr::new(ip, 0));
        }
        None => {
            if let Some(r) = real {
                r.client = r.origin;
            }
        }
    }
}

/// The client to show for the request in flight.
pub(super) fn client<'a>(real: &'a Option<Box<RealPeer>>, socket_peer: &'a Peer) -> &'a Peer {
    real.as_ref().map_or(socket_peer, |r| &r.client)
}
