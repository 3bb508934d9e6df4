//! Who a connecting Envoy is: a gateway proxy (the Gateway it serves) or a sidecar (its pod),
//! as its snapshot key, from the node it announces.
//!
//! A sidecar's key is its pod's, `pod/<ns>/<name>`: the control plane publishes it as an alias
//! of the pod's class snapshot, so replicas share one configuration and a pod whose class
//! changes moves to the other one without reconnecting.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use trellis_model::ObjectKey;
use trellis_translate::proxy_key;

/// The node metadata key naming the Gateway a proxy serves (`trellis bootstrap` sets it).
pub const GATEWAY_METADATA_KEY: &str = "trellis.dev/gateway";
/// The node metadata key naming the pod a sidecar serves (`trellis bootstrap --pod` sets it).
pub const POD_METADATA_KEY: &str = "trellis.dev/pod";

/// The snapshot key of a pod's sidecar: `pod/<ns>/<name>`.
pub fn pod_proxy_key(pod: &ObjectKey) -> String {
    format!("pod/{}/{}", pod.namespace, pod.name)
}

/// `NAMESPACE/NAME`, when it is one.
fn namespaced(text: &str) -> Option<ObjectKey> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Some(ObjectKey::new(ns, name))
        }
        _ => None,
    }
}

/// The snapshot key of a proxy, from its node: a sidecar's metadata `trellis.dev/pod`
/// (`NAMESPACE/NAME` of its pod), else a gateway proxy's metadata `trellis.dev/gateway` or, without
/// it, the node cluster (`NAMESPACE/NAME` of the Gateway). Anything else is refused with a message
/// saying what to set.
pub fn resolve_node(node: &Node) -> Result<String, String> {
    let metadata = |key: &str| {
        node.metadata
            .as_ref()
            .and_then(|m| m.fields.get(key))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    };
    if let Some(pod) = metadata(POD_METADATA_KEY) {
        return namespaced(&pod)
            .map(|pod| pod_proxy_key(&pod))
            .ok_or_else(|| {
                format!(
                    "node {:?}: node metadata {POD_METADATA_KEY} must be NAMESPACE/NAME, got {pod:?}",
                    node.id
                )
            });
    }
    let gateway = metadata(GATEWAY_METADATA_KEY).unwrap_or_else(|| node.cluster.clone());
    namespaced(&gateway)
        .map(|gateway| proxy_key(&gateway))
        .ok_or_else(|| {
            format!(
                "node {:?} does not name a Gateway or a pod: set node metadata \
                 {GATEWAY_METADATA_KEY} (or the node cluster) or {POD_METADATA_KEY} to \
                 NAMESPACE/NAME, as `trellis bootstrap` does",
                node.id
            )
        })
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
    fn a_sidecar_is_keyed_by_its_pod() {
        let mut n = node("ignored", None);
        n.metadata = Some(Struct {
            fields: [(
                POD_METADATA_KEY.to_string(),
                Value {
                    kind: Some(Kind::StringValue("shop/web-1".into())),
                },
            )]
            .into_iter()
            .collect(),
        });
        assert_eq!(resolve_node(&n).as_deref(), Ok("pod/shop/web-1"));
        if let Some(m) = n.metadata.as_mut() {
            m.fields.insert(
                POD_METADATA_KEY.to_string(),
                Value {
                    kind: Some(Kind::StringValue("web-1".into())),
                },
            );
        }
        assert!(resolve_node(&n).unwrap_err().contains(POD_METADATA_KEY));
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
