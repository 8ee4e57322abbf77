//! Allocations per request on the hot path, counted by a counting global allocator (this test
//! binary's own): parsing a typical request head. The bound is today's count, so a change that
//! adds an allocation per request is noticed here, not only in a benchmark.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the counter is a
// thread-local Cell touched only by its own thread (const-initialised, so reading it never
// allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above, for `dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: as above, for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations (and reallocations) made by `f` on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = COUNT.with(Cell::get);
    let v = f();
    (COUNT.with(Cell::get) - before, v)
}

const CURL_GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\n\
User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const BROWSER_GET: &[u8] = b"GET /static/app.css?v=3 HTTP/1.1\r\nHost: example.test\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/css,*/*;q=0.1\r\nAccept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nReferer: http://example.test/\r\n\
If-Modified-Since: Tue, 01 Dec 2026 10:00:00 GMT\r\nIf-None-Match: \"abc\"\r\n\r\n";

#[test]
fn parsing_a_request_head_allocates_a_bounded_number_of_times() {
    for (name, input, bound) in [("curl", CURL_GET, 1), ("browser", BROWSER_GET, 1)] {
        let (n, r) = allocations(|| luahttpd::http::request::parse(input, 8192));
        let r = r
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{name}: refused"));
        assert_eq!(r.head_len, input.len());
        eprintln!("{name}: {n} allocations");
        assert!(
            n <= bound,
            "{name}: {n} allocations per parse (bound {bound})"
        );
        // The same again: nothing is cached that a second parse would not allocate.
        let (again, _) = allocations(|| luahttpd::http::request::parse(input, 8192));
        assert_eq!(again, n, "{name}");
    }
}
