//! e2e

pub mod conformance;
pub mod echo;
pub mod harness;
pub mod load;
pub mod xds_client;
