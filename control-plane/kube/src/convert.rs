//! Objects as the API server sends them (JSON, read as `DynamicObject`) into the model's typed
//! objects, and the status each one carries now.
//!
//! ```text
//!  DynamicObject ──► JSON ──(apiVersion/kind set, managedFields and resourceVersion dropped)──►
//!      serde_path_to_error ──► Object            (or: "field spec.rules[0]...: reason")
//!  DynamicObject ──► ObservedObject { resourceVersion, generation, .status }
//! ```
//!
//! The resourceVersion is dropped from the model object so that a write that changes nothing
//! translation reads (a status update, Trellis's own included) leaves the object equal to the
//! one before, and nothing is translated again.

use crate::kinds::WatchedKind;
use kube::core::DynamicObject;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use trellis_model::{Object, ObjectKey};

/// What an object's status is in the API now, with the version it was read at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedObject {
    /// `metadata.resourceVersion`: a status write is conditional on it.
    pub resource_version: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `.status` (JSON null when absent).
    pub status: serde_json::Value,
}

/// The key of an API object.
pub fn key_of(object: &DynamicObject) -> ObjectKey {
    ObjectKey::of(&object.metadata)
}

/// The status-relevant part of an API object.
pub fn observe(object: &DynamicObject) -> ObservedObject {
    ObservedObject {
        resource_version: object.metadata.resource_version.clone().unwrap_or_default(),
        generation: object.metadata.generation,
        status: object
            .data
            .get("status")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
    }
}

/// The annotation `kubectl apply` leaves, a full copy of the object: not needed, often large.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Reads an API object as a model object. The error names the field and the reason.
pub fn convert(watched: &WatchedKind, object: &DynamicObject) -> Result<Object, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    if let Some(map) = value.as_object_mut() {
        // Lists leave out apiVersion and kind on items; typed core objects check them.
        map.insert("apiVersion".into(), watched.api_version().into());
        map.insert("kind".into(), watched.kind.name().into());
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
            if let Some(annotations) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                annotations.remove(LAST_APPLIED);
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    /// Deserializes the JSON as the kind's type.
    struct Typed(serde_json::Value);
    impl trellis_model::KindVisitor for Typed {
        type Output = Result<Object, String>;
        fn visit<T>(self, wrap: fn(Arc<T>) -> Object) -> Self::Output
        where
            T: DeserializeOwned + Clone + Send + Sync + 'static,
        {
            typed::<T>(self.0).map(wrap)
        }
    }
    let mut object = watched.kind.visit(Typed(value))?;
    object.trim();
    Ok(object)
}

fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<Arc<T>, String> {
    serde_path_to_error::deserialize(value)
        .map(Arc::new)
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                inner.to_string()
            } else {
                format!("field {path}: {inner}")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_model::Kind;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a dynamic object")
    }

    fn watched(kind: Kind) -> &'static WatchedKind {
        WatchedKind::of(kind).expect("watched")
    }

    #[test]
    fn a_route_without_type_fields_reads_as_a_model_route_without_volatile_metadata() {
        let o = dynamic(json!({
            "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "42", "generation": 3,
                          "managedFields": [{"manager": "kubectl"}],
                          "annotations": {LAST_APPLIED: "{}"}},
            "spec": {"parentRefs": [{"name": "web"}], "hostnames": ["a.example.com"]},
            "status": {"parents": []}
        }));
        let Object::HttpRoute(route) = convert(watched(Kind::HttpRoute), &o).expect("converts")
        else {
            panic!("not a route")
        };
        assert_eq!(route.metadata.generation, Some(3));
        assert_eq!(route.metadata.resource_version, None);
        assert_eq!(route.metadata.managed_fields, None);
        assert_eq!(route.metadata.annotations, None);
        assert_eq!(route.spec.parent_refs[0].kind, "Gateway");
        let seen = observe(&o);
        assert_eq!(seen.resource_version, "42");
        assert_eq!(seen.status, json!({"parents": []}));
    }

    #[test]
    fn a_wrong_field_is_named_with_its_path() {
        let o = dynamic(json!({
            "metadata": {"name": "g", "namespace": "ns"},
            "spec": {"gatewayClassName": "trellis",
                     "listeners": [{"name": "http", "port": "eighty", "protocol": "HTTP"}]}
        }));
        let e = convert(watched(Kind::Gateway), &o).expect_err("fails");
        assert!(e.starts_with("field spec.listeners[0].port:"), "{e}");
    }

    #[test]
    fn core_objects_read_with_their_type_fields_restored() {
        let o = dynamic(json!({
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"ports": [{"port": 80}]}
        }));
        assert!(matches!(
            convert(watched(Kind::Service), &o),
            Ok(Object::Service(_))
        ));
    }
}
