//! e2e

pub mod echo;
pub mod harness;
