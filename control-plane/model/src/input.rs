//! Object identity ([`ObjectKey`], [`Kind`]), the tagged [`Object`] union, and the [`InputSet`]
//! that holds one consistent view of everything a source knows.

use crate::core::{ConfigMap, EndpointSlice, Namespace, ObjectMeta, Secret, Service};
use crate::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::policy::{AuthorizationPolicy, RateLimitPolicy, WasmFilter};
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

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The kinds Trellis reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `gateway.networking.k8s.io/v1` GatewayClass (cluster-scoped).
    GatewayClass,
    /// `gateway.networking.k8s.io/v1` Gateway.
    Gateway,
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute,
    /// `gateway.networking.k8s.io/v1beta1` (or v1) ReferenceGrant.
    ReferenceGrant,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` Secret.
    Secret,
    /// `v1` ConfigMap.
    ConfigMap,
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `policy.trellis.dev/v1alpha1` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `policy.trellis.dev/v1alpha1` RateLimitPolicy.
    RateLimitPolicy,
    /// `policy.trellis.dev/v1alpha1` WasmFilter.
    WasmFilter,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 12] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::ReferenceGrant,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Namespace,
        Kind::AuthorizationPolicy,
        Kind::RateLimitPolicy,
        Kind::WasmFilter,
    ];

    /// The `kind` field value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Namespace => "Namespace",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RateLimitPolicy => "RateLimitPolicy",
            Kind::WasmFilter => "WasmFilter",
        }
    }

    /// The API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::GatewayClass | Kind::Gateway | Kind::HttpRoute | Kind::ReferenceGrant => {
                crate::gateway::GROUP
            }
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::AuthorizationPolicy | Kind::RateLimitPolicy | Kind::WasmFilter => {
                crate::policy::GROUP
            }
            Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Namespace => "",
        }
    }

    /// The `apiVersion` Trellis writes for this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::GatewayClass | Kind::Gateway | Kind::HttpRoute | Kind::ReferenceGrant => {
                "gateway.networking.k8s.io/v1"
            }
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::AuthorizationPolicy | Kind::RateLimitPolicy | Kind::WasmFilter => {
                crate::policy::API_VERSION
            }
            Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Namespace => "v1",
        }
    }

    /// API versions accepted on input for this kind.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        match self {
            Kind::GatewayClass | Kind::Gateway | Kind::HttpRoute | Kind::ReferenceGrant => {
                matches!(
                    api_version,
                    "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1"
                )
            }
            _ => api_version == self.api_version(),
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }

    /// The kind for an `apiVersion`/`kind` pair, if Trellis reads it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.accepts_api_version(api_version))
    }

    /// Lower-case plural used in paths (`httproutes`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::GatewayClass => "gatewayclasses",
            Kind::Gateway => "gateways",
            Kind::HttpRoute => "httproutes",
            Kind::ReferenceGrant => "referencegrants",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Namespace => "namespaces",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::RateLimitPolicy => "ratelimitpolicies",
            Kind::WasmFilter => "wasmfilters",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One object of a kind Trellis reads. Objects are shared (`Arc`): a source that hands the
/// same object out again keeps its identity, which lets translation reuse work for objects that
/// did not change.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Object {
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HttpRoute(Arc<HttpRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    ConfigMap(Arc<ConfigMap>),
    Namespace(Arc<Namespace>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
    RateLimitPolicy(Arc<RateLimitPolicy>),
    WasmFilter(Arc<WasmFilter>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Namespace(_) => Kind::Namespace,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::RateLimitPolicy(_) => Kind::RateLimitPolicy,
            Object::WasmFilter(_) => Kind::WasmFilter,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::RateLimitPolicy(o) => &o.metadata,
            Object::WasmFilter(o) => &o.metadata,
        }
    }

    /// The object's metadata, mutably (copying the object if it is shared).
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::GatewayClass(o) => &mut Arc::make_mut(o).metadata,
            Object::Gateway(o) => &mut Arc::make_mut(o).metadata,
            Object::HttpRoute(o) => &mut Arc::make_mut(o).metadata,
            Object::ReferenceGrant(o) => &mut Arc::make_mut(o).metadata,
            Object::Service(o) => &mut Arc::make_mut(o).metadata,
            Object::EndpointSlice(o) => &mut Arc::make_mut(o).metadata,
            Object::Secret(o) => &mut Arc::make_mut(o).metadata,
            Object::ConfigMap(o) => &mut Arc::make_mut(o).metadata,
            Object::Namespace(o) => &mut Arc::make_mut(o).metadata,
            Object::AuthorizationPolicy(o) => &mut Arc::make_mut(o).metadata,
            Object::RateLimitPolicy(o) => &mut Arc::make_mut(o).metadata,
            Object::WasmFilter(o) => &mut Arc::make_mut(o).metadata,
        }
    }

    /// The spec as JSON bytes (for change detection); empty for kinds without a spec.
    pub fn spec_bytes(&self) -> Vec<u8> {
        let spec = match self {
            Object::GatewayClass(o) => serde_json::to_vec(&o.spec),
            Object::Gateway(o) => serde_json::to_vec(&o.spec),
            Object::HttpRoute(o) => serde_json::to_vec(&o.spec),
            Object::ReferenceGrant(o) => serde_json::to_vec(&o.spec),
            Object::AuthorizationPolicy(o) => serde_json::to_vec(&o.spec),
            Object::RateLimitPolicy(o) => serde_json::to_vec(&o.spec),
            Object::WasmFilter(o) => serde_json::to_vec(&o.spec),
            _ => return Vec::new(),
        };
        spec.unwrap_or_default()
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(self.metadata())
    }
}

/// Objects of one kind, by key.
pub type Objects<T> = BTreeMap<ObjectKey, Arc<T>>;

/// One consistent view of every object Trellis reads, sorted by key.
///
/// Values are `Arc`s so a source can hand out new sets cheaply: an update clones the maps'
/// spines, not the objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputSet {
    /// GatewayClasses (cluster-scoped: empty namespace in the key).
    pub gateway_classes: Objects<GatewayClass>,
    /// Gateways.
    pub gateways: Objects<Gateway>,
    /// HTTPRoutes.
    pub http_routes: Objects<HttpRoute>,
    /// ReferenceGrants.
    pub reference_grants: Objects<ReferenceGrant>,
    /// Services.
    pub services: Objects<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Objects<EndpointSlice>,
    /// Secrets.
    pub secrets: Objects<Secret>,
    /// ConfigMaps.
    pub config_maps: Objects<ConfigMap>,
    /// Namespaces (cluster-scoped).
    pub namespaces: Objects<Namespace>,
    /// AuthorizationPolicies.
    pub authorization_policies: Objects<AuthorizationPolicy>,
    /// RateLimitPolicies.
    pub rate_limit_policies: Objects<RateLimitPolicy>,
    /// WasmFilters.
    pub wasm_filters: Objects<WasmFilter>,
}

impl InputSet {
    /// Adds or replaces an object; returns the previous object of the same kind and key.
    pub fn insert(&mut self, object: Object) -> Option<Object> {
        let key = object.key();
        match object {
            Object::GatewayClass(o) => self
                .gateway_classes
                .insert(key, o)
                .map(Object::GatewayClass),
            Object::Gateway(o) => self.gateways.insert(key, o).map(Object::Gateway),
            Object::HttpRoute(o) => self.http_routes.insert(key, o).map(Object::HttpRoute),
            Object::ReferenceGrant(o) => self
                .reference_grants
                .insert(key, o)
                .map(Object::ReferenceGrant),
            Object::Service(o) => self.services.insert(key, o).map(Object::Service),
            Object::EndpointSlice(o) => self
                .endpoint_slices
                .insert(key, o)
                .map(Object::EndpointSlice),
            Object::Secret(o) => self.secrets.insert(key, o).map(Object::Secret),
            Object::ConfigMap(o) => self.config_maps.insert(key, o).map(Object::ConfigMap),
            Object::Namespace(o) => self.namespaces.insert(key, o).map(Object::Namespace),
            Object::AuthorizationPolicy(o) => self
                .authorization_policies
                .insert(key, o)
                .map(Object::AuthorizationPolicy),
            Object::RateLimitPolicy(o) => self
                .rate_limit_policies
                .insert(key, o)
                .map(Object::RateLimitPolicy),
            Object::WasmFilter(o) => self.wasm_filters.insert(key, o).map(Object::WasmFilter),
        }
    }

    /// Removes an object; returns whether it was present.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::GatewayClass => self.gateway_classes.remove(key).is_some(),
            Kind::Gateway => self.gateways.remove(key).is_some(),
            Kind::HttpRoute => self.http_routes.remove(key).is_some(),
            Kind::ReferenceGrant => self.reference_grants.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
            Kind::ConfigMap => self.config_maps.remove(key).is_some(),
            Kind::Namespace => self.namespaces.remove(key).is_some(),
            Kind::AuthorizationPolicy => self.authorization_policies.remove(key).is_some(),
            Kind::RateLimitPolicy => self.rate_limit_policies.remove(key).is_some(),
            Kind::WasmFilter => self.wasm_filters.remove(key).is_some(),
        }
    }

    /// Whether an object of this kind and key is present.
    pub fn contains(&self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::GatewayClass => self.gateway_classes.contains_key(key),
            Kind::Gateway => self.gateways.contains_key(key),
            Kind::HttpRoute => self.http_routes.contains_key(key),
            Kind::ReferenceGrant => self.reference_grants.contains_key(key),
            Kind::Service => self.services.contains_key(key),
            Kind::EndpointSlice => self.endpoint_slices.contains_key(key),
            Kind::Secret => self.secrets.contains_key(key),
            Kind::ConfigMap => self.config_maps.contains_key(key),
            Kind::Namespace => self.namespaces.contains_key(key),
            Kind::AuthorizationPolicy => self.authorization_policies.contains_key(key),
            Kind::RateLimitPolicy => self.rate_limit_policies.contains_key(key),
            Kind::WasmFilter => self.wasm_filters.contains_key(key),
        }
    }

    /// Number of objects of every kind together.
    pub fn len(&self) -> usize {
        self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.reference_grants.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.namespaces.len()
            + self.authorization_policies.len()
            + self.rate_limit_policies.len()
            + self.wasm_filters.len()
    }

    /// Whether the set holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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
