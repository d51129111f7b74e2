//! The conformance suite, unchanged, on PostgreSQL (each case in a schema of its own).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

tidings_core::conformance_tests!(optional: common::fixture());
