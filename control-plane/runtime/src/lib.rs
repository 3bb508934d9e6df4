//! How the control plane serves: every listener it runs has a connection cap (in all and per
//! peer address), a deadline for a new connection to say something, and (HTTP) a deadline for
//! each request's headers; the admin endpoint takes a bearer token for everything but probes,
//! metrics and modules.
//!
//! ```text
//!  TcpListener ──accept──► over the cap? ──yes──► closed at once, counted
//!                               │no
//!                               ▼
//!                      Guarded stream (holds its slot; ends when the peer says nothing in time)
//!                        ├─► hyper HTTP/1 (header read timeout) ──► admin / module router
//!                        └─► tonic (HTTP/2) ──► ADS, CSDS
//! ```

pub mod auth;
pub mod http;
pub mod incoming;
pub mod tls;

pub use auth::AdminAuth;
pub use http::{HttpLimits, serve_http};
pub use incoming::{ConnectionLimits, Guarded, guarded_incoming};
