//! Runnable examples of the kalam KalamDB client: see the `examples` targets
//! (`cargo run -p kalam-examples --example quickstart`).
//!
//! This library target exists so that `cargo test` compiles every Rust block
//! of the project README as a doc test: the README's code cannot drift from
//! the API.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
