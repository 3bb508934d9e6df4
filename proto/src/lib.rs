//! Trellis's own protobuf APIs, generated from the `.proto` files beside this crate. Envoy's
//! APIs come from the `envoy-types` crate.

/// `trellis.ca.v1`: the certificate service.
pub mod ca {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trellis.ca.v1");
    }
}
