//! The status Trellis reports for the objects it manages.

use std::collections::BTreeMap;
use trellis_model::ObjectKey;
use trellis_model::gateway::{GatewayClassStatus, GatewayStatus, RouteStatus};

/// Status of every managed object, by key. Objects Trellis does not manage (another
/// controller's GatewayClass, Gateways of such classes, routes not attached to Trellis
/// Gateways) have no entry.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSet {
    /// GatewayClasses naming Trellis's controller.
    pub gateway_classes: BTreeMap<ObjectKey, GatewayClassStatus>,
    /// Gateways of those classes.
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// HTTPRoutes with at least one parentRef to such a Gateway.
    pub http_routes: BTreeMap<ObjectKey, RouteStatus>,
}
