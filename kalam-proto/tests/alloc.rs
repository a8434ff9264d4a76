//! (A global allocator needs `unsafe`; this test file alone allows it.)
#![allow(unsafe_code)]

//! Stamping a cached token allocates nothing: the machine keeps the
//! `Authorization` value, and cloning it is a reference-count bump.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kalam_proto::{AuthConfig, AuthMachine, AuthProvider, Endpoints, Instant, Now};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn stamping_a_cached_token_does_not_allocate() {
    let claims =
        r#"{"sub":"root","iss":"kalamdb","exp":1800003600,"iat":1800000000,"role":"system","token_type":"access"}"#;
    let token = format!(
        "{}.{}.sig",
        B64.encode(r#"{"typ":"JWT","alg":"HS256"}"#),
        B64.encode(claims)
    );
    let now = Now::new(Instant::ZERO, Duration::from_secs(1_800_000_000));
    let machine = AuthMachine::new(
        Endpoints::new("http://127.0.0.1:2900").unwrap(),
        AuthProvider::jwt_token(token),
        AuthConfig::default(),
        now,
    );
    let mut request = http::Request::new(Vec::<u8>::new());
    request.headers_mut().reserve(8);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..1000 {
        let value = machine.authorization(now).expect("a usable token").clone();
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(
        after - before,
        0,
        "allocations while stamping a cached token 1000 times"
    );
}
