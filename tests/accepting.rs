//! Accepting connections: the head timeout starts at accept, and one client address cannot
//! take every connection slot (`limits.connections_per_ip`).

mod common;

use common::{Client, Server};
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::io::Read;
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

const FILES: &[(&str, &[u8])] = &[("a.txt", b"hello\n")];

/// A client connection from the loopback address `from` (127.0.0.2 and up are distinct peers).
fn connect_from(from: [u8; 4], to: &str) -> Client {
    let to: SocketAddrV4 = to.parse().expect("server address");
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let [a, b, c, d] = from;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(a, b, c, d, 0),
    )
    .expect("bind the client address");
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).expect("connect");
    let stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    Client::from_stream(stream)
}

fn get(c: &mut Client) -> u16 {
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    c.response(false).status
}

#[test]
fn a_connection_that_never_sends_a_byte_is_closed_after_read_idle() {
    let s = Server::start("workers = 1, timeouts = { read_idle = 1 }", FILES);
    let mut c = TcpStream::connect(&s.addr).expect("connect");
    let start = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf);
    let took = start.elapsed();
    assert!(
        matches!(n, Ok(0))
            || n.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a close, got {n:?}"
    );
    // The timer may fire up to 1/8 of its duration early; slack for a loaded machine.
    assert!(
        took >= Duration::from_millis(800),
        "closed too soon: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "closed too late: {took:?}");
}

#[test]
fn connections_per_ip_refuses_the_extra_connection_with_503() {
    let s = Server::start("workers = 1, limits = { connections_per_ip = 2 }", FILES);
    let mut a = connect_from([127, 0, 0, 1], &s.addr);
    let mut b = connect_from([127, 0, 0, 1], &s.addr);
    assert_eq!(get(&mut a), 200);
    assert_eq!(get(&mut b), 200);
    // The third from the same address: 503 without a request, then close.
    let mut c = connect_from([127, 0, 0, 1], &s.addr);
    let r = c.response(false);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed(), "the refused connection closes");
    // Another address has its own count.
    let mut other = connect_from([127, 0, 0, 2], &s.addr);
    assert_eq!(get(&mut other), 200);
    // The kept ones still work; closing one frees a place for the address.
    assert_eq!(get(&mut a), 200);
    drop(b);
    common::wait_for("a freed place", Duration::from_secs(10), || {
        let mut d = connect_from([127, 0, 0, 1], &s.addr);
        d.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        d.try_response(false).is_some_and(|r| r.status == 200)
    });
}

#[test]
fn without_connections_per_ip_one_address_may_hold_many() {
    let s = Server::start("workers = 1", FILES);
    let mut held: Vec<Client> = (0..20)
        .map(|_| connect_from([127, 0, 0, 1], &s.addr))
        .collect();
    for c in &mut held {
        assert_eq!(get(c), 200);
    }
}

#[test]
fn a_flood_over_connections_per_ip_does_not_crowd_out_other_clients() {
    let s = Server::start(
        "workers = 1, limits = { connections = 8, connections_per_ip = 2 }",
        FILES,
    );
    // Two allowed connections from 127.0.0.2, then a flood of refused ones that are never
    // read from or closed: each must cost the server nothing once answered.
    let mut held: Vec<Client> = (0..2)
        .map(|_| connect_from([127, 0, 0, 2], &s.addr))
        .collect();
    for c in &mut held {
        assert_eq!(get(c), 200);
    }
    let flood: Vec<Client> = (0..40)
        .map(|_| connect_from([127, 0, 0, 2], &s.addr))
        .collect();
    let start = Instant::now();
    let mut other = connect_from([127, 0, 0, 3], &s.addr);
    assert_eq!(get(&mut other), 200);
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "another address waited {took:?} behind the refused connections"
    );
    // The refused ones got their answer and were closed.
    let mut first = flood.into_iter().next().expect("a flood connection");
    let r = first.response(false);
    assert_eq!(r.status, 503);
    assert!(first.closed(), "the refused connection closes");
}
