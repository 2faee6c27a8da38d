//! End-to-end tests that cross crates live in `tests/` beside this file.

pub mod banner;
