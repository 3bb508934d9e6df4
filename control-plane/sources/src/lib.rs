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

pub use file::{Diagnostic, FileProvider, Load, SETTLE, Severity, change_window, watch};
pub use parse::{ParsedDocument, parse_documents};
