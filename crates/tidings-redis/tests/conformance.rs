//! The conformance suite, unchanged, on Redis (each case under its own prefix).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

tidings_core::conformance_tests!(optional: common::fixture());
