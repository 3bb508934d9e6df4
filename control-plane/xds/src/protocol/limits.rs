//! Bounds on what one stream's client can make the server hold.
//!
//! A hostile client sends whatever it likes; each of these keeps what one stream costs the
//! control plane bounded. A request over a bound closes the stream with `RESOURCE_EXHAUSTED`
//! (checked before the request touches the stream's state); NACK texts are cut instead, since
//! a real proxy's long error should not end its stream.

use super::state::StreamState;
use crate::resource::ResourceType;
use std::collections::BTreeSet;

/// The bounds, per stream.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// Names one type may be subscribed to (Delta: accumulated over requests; SotW: named in
    /// one request), and entries of a Delta reconnect's `initial_resource_versions`.
    pub max_names_per_type: usize,
    /// The longest resource name or version accepted.
    pub max_name_bytes: usize,
    /// Subscribed names of one type that the proxy's snapshot does not have (they cost memory
    /// of their own, where known names share the snapshot's).
    pub max_unknown_names: usize,
    /// NACK texts (`error_detail.message`) are cut to this many bytes.
    pub max_error_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_names_per_type: 65_536,
            max_name_bytes: 1024,
            max_unknown_names: 4096,
            max_error_bytes: 1024,
        }
    }
}

/// A request over one of the bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The bound's name, as in the `trellis_xds_limit_hits_total` metric.
    pub limit: &'static str,
    /// What was over it.
    pub message: String,
}

/// `text` cut to at most `max` bytes (at a character boundary), marked when cut.
pub fn bounded_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

/// Checks the names of a request of type `t` against the bounds. `subscribed` are the names
/// the request subscribes to, `keep` whether they add to the type's current names (Delta) or
/// replace them (SotW), `reported` the versions a Delta reconnect reports.
pub(crate) fn check_names<'a>(
    state: &StreamState,
    limits: &StreamLimits,
    t: ResourceType,
    subscribed: impl Iterator<Item = &'a String> + Clone,
    keep: bool,
    reported: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), LimitExceeded> {
    let too_long = |what: &str, len: usize| LimitExceeded {
        limit: "name_bytes",
        message: format!(
            "a {what} of {len} bytes (the limit is {})",
            limits.max_name_bytes
        ),
    };
    let current = state.types.get(&t);
    let mut names: BTreeSet<&str> = if keep {
        current
            .map(|ts| ts.names.iter().map(|n| &**n).collect())
            .unwrap_or_default()
    } else {
        BTreeSet::new()
    };
    for name in subscribed.clone() {
        if name.len() > limits.max_name_bytes {
            return Err(too_long("resource name", name.len()));
        }
        names.insert(name);
        if names.len() > limits.max_names_per_type {
            return Err(LimitExceeded {
                limit: "names_per_type",
                message: format!(
                    "more than {} {t} names subscribed on one stream",
                    limits.max_names_per_type
                ),
            });
        }
    }
    let mut reported_count = 0;
    for (name, version) in reported {
        reported_count += 1;
        if reported_count > limits.max_names_per_type {
            return Err(LimitExceeded {
                limit: "names_per_type",
                message: format!(
                    "more than {} {t} initial resource versions",
                    limits.max_names_per_type
                ),
            });
        }
        if name.len() > limits.max_name_bytes {
            return Err(too_long("resource name", name.len()));
        }
        if version.len() > limits.max_name_bytes {
            return Err(too_long("resource version", version.len()));
        }
    }
    // Names the snapshot does not have: only judged once there is a snapshot (a restarted
    // control plane has none at first, and a reconnecting proxy names what it held).
    if let Some(snapshot) = &state.snapshot {
        let items = snapshot.resources(t).items();
        let unknown = names
            .iter()
            .filter(|n| **n != "*" && !items.contains_key(**n))
            .count();
        if unknown > limits.max_unknown_names {
            return Err(LimitExceeded {
                limit: "unknown_names",
                message: format!(
                    "{unknown} subscribed {t} names are not in this proxy's configuration (the \
                     limit is {})",
                    limits.max_unknown_names
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        assert_eq!(bounded_text("short", 10), "short");
        let cut = bounded_text(&"é".repeat(10), 5);
        assert!(cut.starts_with("éé…"), "{cut}");
        assert!(cut.ends_with("(16 bytes cut)"), "{cut}");
    }
}
