//! Object identity ([`ObjectKey`], [`Kind`]), the tagged [`Object`] union, and the [`InputSet`]
//! that holds one consistent view of everything a source knows.

use crate::core::{ConfigMap, EndpointSlice, Namespace, ObjectMeta, Pod, Secret, Service};
use crate::egress::ExternalService;
use crate::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::policy::{AuthorizationPolicy, RateLimitPolicy, WasmFilter};
use crate::resilience::BackendTrafficPolicy;
use crate::security::PeerAuthentication;
use crate::telemetry::{HealthPolicy, TracingPolicy};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Namespace and name of an object; cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A cluster-scoped key.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new(String::new(), name)
    }

    /// The key of an object from its metadata (namespace as written, empty if unset).
    pub fn of(meta: &ObjectMeta) -> Self {
        Self::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl serde::Serialize for ObjectKey {
    /// Serializes as `ns/name` (or `name` when cluster-scoped), so keys work as map keys.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ObjectKey {
    /// Reads `ns/name` (or `name` for a cluster-scoped object), as [`ObjectKey`] serializes.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.split_once('/') {
            Some((namespace, name)) => ObjectKey::new(namespace, name),
            None => ObjectKey::cluster(text),
        })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Every kind Trellis reads, declared once: the [`Kind`] enum, the [`Object`] union, the
/// [`InputSet`] maps and every per-kind table are generated from this list. Adding a kind is one
/// entry here (and its translation).
///
/// Per kind: the variant and its Rust type, the `InputSet` field, the Kubernetes `kind` and
/// plural, the API group, the version read, other versions accepted on input, whether it is
/// namespaced, whether it has a `spec`, whether the Kubernetes provider watches it (and whether
/// its CRD may be absent), and whether Trellis writes its status.
macro_rules! kinds {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident($ty:ty) {
            field: $field:ident,
            kind: $name:literal,
            plural: $plural:literal,
            group: $group:expr,
            version: $version:literal,
            also: [$($also:literal),*],
            namespaced: $namespaced:literal,
            spec: $spec:tt,
            watched: $watched:literal,
            optional: $optional:literal,
            status: $status:literal $(,)?
        }
    ),+ $(,)?) => {
        /// The kinds Trellis reads.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl Kind {
            /// Every kind, in a stable order.
            pub const ALL: [Kind; kinds!(@count $($variant)+)] = [$(Kind::$variant),+];

            /// The `kind` field value.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => $name,)+ }
            }

            /// Lower-case plural used in paths (`httproutes`).
            pub fn plural(self) -> &'static str {
                match self { $(Kind::$variant => $plural,)+ }
            }

            /// The API group (`""` for core).
            pub fn group(self) -> &'static str {
                match self { $(Kind::$variant => $group,)+ }
            }

            /// The version read and written.
            pub fn version(self) -> &'static str {
                match self { $(Kind::$variant => $version,)+ }
            }

            /// The `apiVersion` Trellis writes for this kind.
            pub fn api_version(self) -> String {
                if self.group().is_empty() {
                    self.version().to_string()
                } else {
                    format!("{}/{}", self.group(), self.version())
                }
            }

            /// API versions accepted on input for this kind.
            pub fn accepts_api_version(self, api_version: &str) -> bool {
                let (group, version) = match api_version.rsplit_once('/') {
                    Some((g, v)) => (g, v),
                    None => ("", api_version),
                };
                group == self.group()
                    && match self {
                        $(Kind::$variant => version == $version $(|| version == $also)*,)+
                    }
            }

            /// Whether objects of this kind live in a namespace.
            pub fn namespaced(self) -> bool {
                match self { $(Kind::$variant => $namespaced,)+ }
            }

            /// Whether the Kubernetes provider watches this kind.
            pub fn watched(self) -> bool {
                match self { $(Kind::$variant => $watched,)+ }
            }

            /// Whether the kind is served by a CustomResourceDefinition a cluster may lack
            /// (Trellis's own kinds): while absent, it reads as having no objects.
            pub fn optional(self) -> bool {
                match self { $(Kind::$variant => $optional,)+ }
            }

            /// Whether Trellis writes this kind's status.
            pub fn writes_status(self) -> bool {
                match self { $(Kind::$variant => $status,)+ }
            }

            /// The kind for an `apiVersion`/`kind` pair, if Trellis reads it.
            pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
                Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == kind && k.accepts_api_version(api_version))
            }

            /// Calls `visitor` with this kind's Rust type and the constructor of its
            /// [`Object`] variant: how a source deserializes an object of a kind known only at
            /// run time.
            pub fn visit<V: KindVisitor>(self, visitor: V) -> V::Output {
                match self { $(Kind::$variant => visitor.visit::<$ty>(Object::$variant),)+ }
            }
        }

        /// One object of a kind Trellis reads. Objects are shared (`Arc`): a source that hands
        /// the same object out again keeps its identity, which lets translation reuse work for
        /// objects that did not change.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $( #[doc = concat!("A ", $name, ".")] $variant(Arc<$ty>), )+
        }

        impl Object {
            /// The object's kind.
            pub fn kind(&self) -> Kind {
                match self { $(Object::$variant(_) => Kind::$variant,)+ }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Object::$variant(o) => &o.metadata,)+ }
            }

            /// The object's metadata, mutably (copying the object if it is shared).
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$variant(o) => &mut Arc::make_mut(o).metadata,)+ }
            }

            /// The spec as JSON bytes (for change detection); empty for kinds without a spec.
            pub fn spec_bytes(&self) -> Vec<u8> {
                match self { $(Object::$variant(o) => kinds!(@spec $spec o),)+ }
            }

            /// The object's key.
            pub fn key(&self) -> ObjectKey {
                ObjectKey::of(self.metadata())
            }
        }

        /// One consistent view of every object Trellis reads, sorted by key.
        ///
        /// Values are `Arc`s so a source can hand out new sets cheaply: an update clones the
        /// maps' spines, not the objects.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct InputSet {
            $( #[doc = concat!("Every ", $name, ", by key.")] pub $field: Objects<$ty>, )+
        }

        impl InputSet {
            /// Adds or replaces an object; returns the previous object of the same kind and key.
            pub fn insert(&mut self, object: Object) -> Option<Object> {
                let key = object.key();
                match object {
                    $(Object::$variant(o) => self.$field.insert(key, o).map(Object::$variant),)+
                }
            }

            /// Removes an object; returns whether it was present.
            pub fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
                match kind { $(Kind::$variant => self.$field.remove(key).is_some(),)+ }
            }

            /// Whether an object of this kind and key is present.
            pub fn contains(&self, kind: Kind, key: &ObjectKey) -> bool {
                match kind { $(Kind::$variant => self.$field.contains_key(key),)+ }
            }

            /// The metadata of the object of this kind and key, if present.
            pub fn metadata(&self, kind: Kind, key: &ObjectKey) -> Option<&ObjectMeta> {
                match kind { $(Kind::$variant => self.$field.get(key).map(|o| &o.metadata),)+ }
            }

            /// Number of objects of every kind together.
            pub fn len(&self) -> usize {
                0 $(+ self.$field.len())+
            }

            /// Whether the set holds no object.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
    (@count $($x:ident)+) => { 0 $(+ kinds!(@one $x))+ };
    (@one $x:ident) => { 1 };
    (@spec true $o:ident) => { serde_json::to_vec(&$o.spec).unwrap_or_default() };
    (@spec false $o:ident) => { { let _ = $o; Vec::new() } };
}

/// What [`Kind::visit`] calls with a kind's Rust type.
pub trait KindVisitor {
    /// What the visit returns.
    type Output;
    /// Called with the kind's type `T` and the constructor of its [`Object`] variant.
    fn visit<T>(self, wrap: fn(Arc<T>) -> Object) -> Self::Output
    where
        T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static;
}

/// Objects of one kind, by key.
pub type Objects<T> = BTreeMap<ObjectKey, Arc<T>>;

const GATEWAY_API: &str = crate::gateway::GROUP;
const TRELLIS_POLICY: &str = crate::policy::GROUP;
const TRELLIS_SECURITY: &str = crate::security::GROUP;
const TRELLIS_TELEMETRY: &str = crate::telemetry::GROUP;
const TRELLIS_NETWORKING: &str = crate::egress::GROUP;

kinds! {
    /// `gateway.networking.k8s.io/v1` GatewayClass (cluster-scoped).
    GatewayClass(GatewayClass) {
        field: gateway_classes, kind: "GatewayClass", plural: "gatewayclasses",
        group: GATEWAY_API, version: "v1", also: ["v1beta1"], namespaced: false, spec: true,
        watched: true, optional: false, status: true,
    },
    /// `gateway.networking.k8s.io/v1` Gateway.
    Gateway(Gateway) {
        field: gateways, kind: "Gateway", plural: "gateways",
        group: GATEWAY_API, version: "v1", also: ["v1beta1"], namespaced: true, spec: true,
        watched: true, optional: false, status: true,
    },
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute(HttpRoute) {
        field: http_routes, kind: "HTTPRoute", plural: "httproutes",
        group: GATEWAY_API, version: "v1", also: ["v1beta1"], namespaced: true, spec: true,
        watched: true, optional: false, status: true,
    },
    /// `gateway.networking.k8s.io/v1beta1` (or v1) ReferenceGrant. Read as `v1beta1`, which
    /// every Gateway API release since v0.6 serves (v1.6 serves `v1` too, but stores `v1beta1`).
    ReferenceGrant(ReferenceGrant) {
        field: reference_grants, kind: "ReferenceGrant", plural: "referencegrants",
        group: GATEWAY_API, version: "v1beta1", also: ["v1"], namespaced: true, spec: true,
        watched: true, optional: false, status: false,
    },
    /// `v1` Service.
    Service(Service) {
        field: services, kind: "Service", plural: "services",
        group: "", version: "v1", also: [], namespaced: true, spec: false,
        watched: true, optional: false, status: false,
    },
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice(EndpointSlice) {
        field: endpoint_slices, kind: "EndpointSlice", plural: "endpointslices",
        group: "discovery.k8s.io", version: "v1", also: [], namespaced: true, spec: false,
        watched: true, optional: false, status: false,
    },
    /// `v1` Pod: the mesh's workloads, kept trimmed to what Trellis reads ([`Object::trim`]).
    Pod(Pod) {
        field: pods, kind: "Pod", plural: "pods",
        group: "", version: "v1", also: [], namespaced: true, spec: false,
        watched: true, optional: false, status: false,
    },
    /// `v1` Secret.
    Secret(Secret) {
        field: secrets, kind: "Secret", plural: "secrets",
        group: "", version: "v1", also: [], namespaced: true, spec: false,
        watched: true, optional: false, status: false,
    },
    /// `v1` ConfigMap (the CA bundles ExternalServices verify their servers against). The
    /// Kubernetes provider watches every ConfigMap but the control plane's own
    /// `trellis-last-good`, whose every write would otherwise come back as a change.
    ConfigMap(ConfigMap) {
        field: config_maps, kind: "ConfigMap", plural: "configmaps",
        group: "", version: "v1", also: [], namespaced: true, spec: false,
        watched: true, optional: false, status: false,
    },
    /// `v1` Namespace (cluster-scoped).
    Namespace(Namespace) {
        field: namespaces, kind: "Namespace", plural: "namespaces",
        group: "", version: "v1", also: [], namespaced: false, spec: false,
        watched: true, optional: false, status: false,
    },
    /// `policy.trellis.dev/v1alpha1` AuthorizationPolicy.
    AuthorizationPolicy(AuthorizationPolicy) {
        field: authorization_policies, kind: "AuthorizationPolicy", plural: "authorizationpolicies",
        group: TRELLIS_POLICY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
    /// `policy.trellis.dev/v1alpha1` RateLimitPolicy.
    RateLimitPolicy(RateLimitPolicy) {
        field: rate_limit_policies, kind: "RateLimitPolicy", plural: "ratelimitpolicies",
        group: TRELLIS_POLICY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
    /// `security.trellis.dev/v1alpha1` PeerAuthentication.
    PeerAuthentication(PeerAuthentication) {
        field: peer_authentications, kind: "PeerAuthentication", plural: "peerauthentications",
        group: TRELLIS_SECURITY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
    /// `policy.trellis.dev/v1alpha1` WasmFilter.
    WasmFilter(WasmFilter) {
        field: wasm_filters, kind: "WasmFilter", plural: "wasmfilters",
        group: TRELLIS_POLICY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
    /// `telemetry.trellis.dev/v1alpha1` TracingPolicy.
    TracingPolicy(TracingPolicy) {
        field: tracing_policies, kind: "TracingPolicy", plural: "tracingpolicies",
        group: TRELLIS_TELEMETRY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
    /// `telemetry.trellis.dev/v1alpha1` HealthPolicy.
    HealthPolicy(HealthPolicy) {
        field: health_policies, kind: "HealthPolicy", plural: "healthpolicies",
        group: TRELLIS_TELEMETRY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },    /// `policy.trellis.dev/v1alpha1` BackendTrafficPolicy.
    BackendTrafficPolicy(BackendTrafficPolicy) {
        field: backend_traffic_policies, kind: "BackendTrafficPolicy",
        plural: "backendtrafficpolicies",
        group: TRELLIS_POLICY, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
    /// `networking.trellis.dev/v1alpha1` ExternalService.
    ExternalService(ExternalService) {
        field: external_services, kind: "ExternalService", plural: "externalservices",
        group: TRELLIS_NETWORKING, version: "v1alpha1", also: [], namespaced: true, spec: true,
        watched: true, optional: true, status: true,
    },
}

impl Object {
    /// Drops what Trellis never reads, so that large objects cost little memory: of a Pod, only
    /// its identity, labels, annotations and owners, its service account and container ports,
    /// and its IPs and readiness are kept (not environment variables, volumes or images).
    pub fn trim(&mut self) {
        if let Object::Pod(pod) = self {
            let pod = Arc::make_mut(pod);
            crate::mesh::trim_pod(pod);
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl InputSet {
    /// Labels of a namespace; empty when the Namespace object is not known.
    ///
    /// Like the API server, every namespace carries `kubernetes.io/metadata.name`.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(&ObjectKey::cluster(namespace))
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert(
            "kubernetes.io/metadata.name".to_string(),
            namespace.to_string(),
        );
        labels
    }
}
