//! Where Trellis's inputs come from.
//!
//! ```text
//!  DIR/**/*.yaml ──parse──► per-file last good objects ──merge──► InputSet + diagnostics
//!        ▲                                                            │
//!        └── notify watcher, debounced ◄──────────────────────────────┘ (watch channel)
//! ```
//!
//! The [`file`] provider reads a directory of Kubernetes YAML. It produces the same
//! [`trellis_model::InputSet`] the Kubernetes provider produces, so translation cannot tell the
//! sources apart.

pub mod file;
mod parse;
pub mod state;

pub use file::{
    Diagnostic, FileProvider, Load, SETTLE, Severity, change_window, watch, watch_with,
};
pub use parse::{ParsedDocument, is_dns_label, is_dns_subdomain, parse_documents};
