//! Which Gateway a connecting Envoy serves: its snapshot key, from the node it announces.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use trellis_model::ObjectKey;
use trellis_translate::proxy_key;

/// The node metadata key naming the Gateway a proxy serves (`trellis bootstrap` sets it).
pub const GATEWAY_METADATA_KEY: &str = "trellis.dev/gateway";

/// The snapshot key of a proxy, from its node: metadata `trellis.dev/gateway` or, without it,
/// the node cluster; either is `<namespace>/<name>` of the Gateway it serves. Anything else is
/// refused with a message saying what to set.
pub fn resolve_node(node: &Node) -> Result<String, String> {
    let from_metadata = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(GATEWAY_METADATA_KEY))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    let gateway = from_metadata.unwrap_or_else(|| node.cluster.clone());
    match gateway.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(proxy_key(&ObjectKey::new(ns, name)))
        }
        _ => Err(format!(
            "node {:?} does not name a Gateway: set node metadata {GATEWAY_METADATA_KEY} (or the node \
             cluster) to NAMESPACE/NAME, as `trellis bootstrap` does",
            node.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn node(cluster: &str, metadata: Option<&str>) -> Node {
        Node {
            id: "envoy-1".into(),
            cluster: cluster.into(),
            metadata: metadata.map(|m| Struct {
                fields: [(
                    GATEWAY_METADATA_KEY.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(m.into())),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_names_the_gateway_before_the_cluster() {
        assert_eq!(
            resolve_node(&node("other/cluster", Some("apps/web"))).as_deref(),
            Ok("gateway/apps/web")
        );
        assert_eq!(
            resolve_node(&node("apps/web", None)).as_deref(),
            Ok("gateway/apps/web")
        );
    }

    #[test]
    fn anything_but_namespace_slash_name_is_refused_with_what_to_set() {
        for bad in ["", "web", "/web", "apps/", "a/b/c"] {
            let e = resolve_node(&node(bad, None)).unwrap_err();
            assert!(e.contains(GATEWAY_METADATA_KEY), "{bad:?}: {e}");
            assert!(e.contains("envoy-1"), "{e}");
        }
    }
}
