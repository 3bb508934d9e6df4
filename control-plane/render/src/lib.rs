//! Envoy resources as Envoy's own JSON (and from there YAML), for people and for golden files:
//! `trellis render`, the translator's Envoy-stage goldens and the `envoy --mode validate` gate
//! all read resources through [`render`].
//!
//! ```text
//!  Ir ──envoy::snapshots()──► Snapshot { type ─► [Any] } ──render()──► { type ─► [JSON] }
//!                                              descriptors compiled in by build.rs
//! ```

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, SerializeOptions, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use trellis_translate::ir::Ir;
use trellis_xds::{ResourceType, Snapshot};

/// Envoy's protobuf descriptors (the message types Trellis sends), compiled in at build time.
pub fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(
            include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin")).as_slice(),
        )
        .unwrap_or_default()
    })
}

/// Whether private keys are written out or replaced by `<redacted>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// `tlsCertificate.privateKey` becomes `{"inlineBytes": "<redacted>"}`.
    Redacted,
    /// As sent.
    Shown,
}

/// Why a resource could not be written as JSON.
#[derive(Debug)]
pub struct RenderError(pub String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RenderError {}

/// One resource (`type_url`, encoded message) as Envoy's JSON, default fields left out.
pub fn resource_json(
    type_url: &str,
    bytes: &[u8],
    keys: Keys,
) -> Result<serde_json::Value, RenderError> {
    let name = type_url.trim_start_matches("type.googleapis.com/");
    let desc = descriptors()
        .get_message_by_name(name)
        .ok_or_else(|| RenderError(format!("no descriptor for {name}")))?;
    let mut msg =
        DynamicMessage::decode(desc, bytes).map_err(|e| RenderError(format!("{name}: {e}")))?;
    mark_empty_filter_configs(&mut msg);
    let mut json = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(
        &mut json,
        &SerializeOptions::new().skip_default_fields(true),
    )
    .map_err(|e| RenderError(format!("{name}: {e}")))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&json.into_inner()).map_err(|e| RenderError(e.to_string()))?;
    if keys == Keys::Redacted
        && let Some(key) = value.pointer_mut("/tlsCertificate/privateKey")
    {
        *key = serde_json::json!({"inlineBytes": "<redacted>"});
    }
    Ok(value)
}

/// The Envoy resources of every proxy (or sidecar class) of `ir`: by snapshot key, type short
/// name (`LDS`, `RDS`, `CDS`, `EDS`, `SDS`) and name order.
pub fn render(
    ir: &Ir,
    keys: Keys,
) -> Result<BTreeMap<String, BTreeMap<&'static str, Vec<serde_json::Value>>>, RenderError> {
    trellis_translate::envoy::snapshots(ir)
        .into_iter()
        .map(|(key, snapshot)| Ok((key, render_snapshot(&snapshot, keys)?)))
        .collect()
}

/// The Envoy resources of one snapshot, by type short name and name order.
pub fn render_snapshot(
    snapshot: &Snapshot,
    keys: Keys,
) -> Result<BTreeMap<&'static str, Vec<serde_json::Value>>, RenderError> {
    let mut by_type = BTreeMap::new();
    for t in ResourceType::ALL {
        let resources = snapshot.resources(t);
        if resources.is_empty() {
            continue;
        }
        let values = resources
            .items()
            .values()
            .map(|r| resource_json(&r.body.type_url, &r.body.value, keys))
            .collect::<Result<Vec<_>, _>>()?;
        by_type.insert(t.short_name(), values);
    }
    Ok(by_type)
}

/// A `FilterConfig` whose `config` is an empty `Any` (it enables a filter that is off by
/// default) cannot be written as JSON: it is shown as a `google.protobuf.Empty`.
fn mark_empty_filter_configs(msg: &mut DynamicMessage) {
    use prost::Message;
    if msg.descriptor().full_name() == "google.protobuf.Any" {
        let url = match msg.get_field_by_name("type_url").map(|v| v.into_owned()) {
            Some(Value::String(url)) => url,
            _ => return,
        };
        if url.is_empty() {
            msg.set_field_by_name(
                "type_url",
                Value::String("type.googleapis.com/google.protobuf.Empty".into()),
            );
        } else if url.ends_with("/envoy.config.route.v3.FilterConfig") {
            let Some(Value::Bytes(bytes)) = msg.get_field_by_name("value").map(|v| v.into_owned())
            else {
                return;
            };
            let Some(desc) =
                descriptors().get_message_by_name("envoy.config.route.v3.FilterConfig")
            else {
                return;
            };
            let Ok(mut inner) = DynamicMessage::decode(desc, bytes.as_ref()) else {
                return;
            };
            mark_empty_filter_configs(&mut inner);
            msg.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
        }
        return;
    }
    let fields: Vec<_> = msg.descriptor().fields().collect();
    for field in fields {
        if !msg.has_field(&field) {
            continue;
        }
        match msg.get_field_mut(&field) {
            Value::Message(m) => mark_empty_filter_configs(m),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(m) = item {
                        mark_empty_filter_configs(m);
                    }
                }
            }
            Value::Map(map) => {
                for item in map.values_mut() {
                    if let Value::Message(m) = item {
                        mark_empty_filter_configs(m);
                    }
                }
            }
            _ => {}
        }
    }
}
