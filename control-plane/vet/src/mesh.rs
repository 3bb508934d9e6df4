//! The mesh: pods of a meshed namespace that run without a sidecar (TRL0103).

use crate::{Code, Finding, ObjectRef, Severity};
use trellis_model::InputSet;
use trellis_model::mesh::{SIDECAR_ANNOTATION, namespace_in_mesh, pod_in_mesh};

/// TRL0103: a pod opted out of the mesh in a namespace that is in it: its traffic is neither
/// encrypted nor authenticated, and a STRICT PeerAuthentication refuses it as a caller.
pub(crate) fn pods_without_sidecars(input: &InputSet, out: &mut Vec<Finding>) {
    for (key, pod) in &input.pods {
        if !namespace_in_mesh(input, &key.namespace) || pod_in_mesh(input, pod) {
            continue;
        }
        out.push(Finding {
            severity: Severity::Info,
            code: Code::PodWithoutSidecar,
            object: ObjectRef::new("Pod", key),
            field: format!("metadata.annotations[{SIDECAR_ANNOTATION}]"),
            message: format!(
                "namespace {} is in the mesh, but this pod runs without a sidecar: its calls \
                 are plaintext and carry no identity, so servers with STRICT mutual TLS \
                 refuse them",
                key.namespace
            ),
            fix: format!(
                "remove the {SIDECAR_ANNOTATION}: \"false\" annotation (and restart the pod) \
                 unless it must stay out of the mesh"
            ),
        });
    }
}
