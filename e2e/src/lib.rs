//! e2e

pub mod echo;
