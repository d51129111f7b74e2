//! The shared test support, under the name the tests use.

#![allow(unused_imports)]

pub use tidings_postgres::testing::*;
