//! Kernel TLS (`TCP_ULP` "tls"), which would let `sendfile` stay zero-copy under TLS.
//!
//! Not used yet: the kernels this was built on list no `tls` ULP, so file bytes are read and
//! encrypted in user space in 16 KiB records (`worker::out`). [`available`] tells which.

/// Whether the running kernel offers the `tls` upper-layer protocol.
pub fn available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"))
}

/// Says at start-up which path static files over TLS take, so a missing kTLS is not silent.
pub fn log_once() {
    if available() {
        tracing::info!(
            "kTLS: the kernel offers the tls ULP, but luahttpd does not use it yet; static files \
             over TLS are read and encrypted in user space in 16 KiB records"
        );
    } else {
        tracing::info!(
            "kTLS: the kernel lists no tls ULP (/proc/sys/net/ipv4/tcp_available_ulp); static \
             files over TLS are read and encrypted in user space in 16 KiB records"
        );
    }
}
