//! Errors: the API errors a client sees as Kubernetes `Status` JSON, and the library's own
//! errors (binding, writing a kubeconfig, loading YAML).
//!
//! ```text
//!  store / patch / selector ──► ApiError ──► ApiError::status_json() ──► HTTP response
//!                                            {"kind":"Status","apiVersion":"v1",
//!                                             "status":"Failure","reason":..,"code":..}
//! ```
//!
//! The shapes (reason, message wording, `details`) follow the real API server closely enough
//! that kube's `Error::Api(status)` carries the same `code` and `reason` a cluster would give.

use std::path::PathBuf;

use serde_json::{Value, json};

/// An error answered to an API client as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404: the object (or the resource type) does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// The resource (plural, with group when not core), e.g. `services` or `gateways.gateway.networking.k8s.io`.
        resource: String,
        /// The object's name (empty when the resource type itself is unknown).
        name: String,
    },
    /// 404: no resource type is served at this path.
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// 409: a create named an object that already exists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// The resource, as in [`ApiError::NotFound`].
        resource: String,
        /// The object's name.
        name: String,
    },
    /// 409: an optimistic-concurrency precondition (resourceVersion or uid) failed, or a
    /// server-side apply conflicted with another field manager.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        /// The resource, as in [`ApiError::NotFound`].
        resource: String,
        /// The object's name.
        name: String,
        /// Why, e.g. "the object has been modified; please apply your changes to the latest
        /// version and try again".
        message: String,
    },
    /// 400: the request itself is malformed (bad query, unparsable body, mismatched names).
    #[error("{0}")]
    BadRequest(String),
    /// 422: the object is not valid (bad name, a JSON patch that cannot apply).
    #[error("{kind} \"{name}\" is invalid: {message}")]
    Invalid {
        /// The object's kind, e.g. `Service`.
        kind: String,
        /// The object's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// 405: the verb is not supported on this path.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 415: a PATCH with a content type the server does not know.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
    )]
    UnsupportedMediaType,
    /// 410: the requested resourceVersion (or continue token) is older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The resourceVersion the client asked for.
        requested: u64,
        /// The oldest resourceVersion the server can still serve from.
        oldest: u64,
    },
    /// 503: the server is refusing requests (a fault injected by a test).
    #[error("the server is currently unable to handle the request")]
    ServiceUnavailable,
    /// 500: an internal error (never expected; reported rather than panicking).
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code this error is answered with.
    pub fn code(&self) -> u16 {
        match self {
            Self::NotFound { .. } | Self::NoSuchResource => 404,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => 409,
            Self::BadRequest(_) => 400,
            Self::Invalid { .. } => 422,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedMediaType => 415,
            Self::Expired { .. } => 410,
            Self::ServiceUnavailable => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The `reason` field of the Status, as the real API server spells it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::NoSuchResource => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::BadRequest(_) => "BadRequest",
            Self::Invalid { .. } => "Invalid",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::Expired { .. } => "Expired",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Internal(_) => "InternalError",
        }
    }

    /// The error as a Kubernetes `Status` object.
    pub fn status_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            Self::NotFound { resource, name }
            | Self::AlreadyExists { resource, name }
            | Self::Conflict { resource, name, .. } => Some(details(resource, name)),
            Self::Invalid { kind, name, .. } => Some(json!({ "name": name, "kind": kind })),
            _ => None,
        };
        if let (Some(d), Some(map)) = (details, status.as_object_mut()) {
            map.insert("details".into(), d);
        }
        status
    }
}

/// `details` as the real server writes it: resource plural in `kind`, group split off.
fn details(resource: &str, name: &str) -> Value {
    match resource.split_once('.') {
        Some((plural, group)) => json!({ "name": name, "group": group, "kind": plural }),
        None => json!({ "name": name, "kind": resource }),
    }
}

/// A library error: something went wrong setting the server up, not answering a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving the TCP listener failed.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address asked for.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file failed.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A YAML or JSON file to load could not be parsed.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An object to load was refused by the store.
    #[error("cannot load {what} from {path}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The object, as `Kind namespace/name`.
        what: String,
        /// Why the store refused it.
        #[source]
        source: Box<ApiError>,
    },
    /// A kind specification (`group/version/Kind/plural[/cluster]`) could not be parsed.
    #[error(
        "bad kind specification {0:?}: expected group/version/Kind/plural[/cluster] (empty group for core)"
    )]
    KindSpec(String),
    /// A kubeconfig for the running server could not be turned into a kube client.
    #[error("cannot build a kube client from the generated kubeconfig")]
    Kubeconfig(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_shaped_like_the_real_server() {
        let e = ApiError::NotFound {
            resource: "gateways.gateway.networking.k8s.io".into(),
            name: "web".into(),
        };
        let s = e.status_json();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(
            s["message"],
            "gateways.gateway.networking.k8s.io \"web\" not found"
        );
        assert_eq!(s["details"]["group"], "gateway.networking.k8s.io");
        assert_eq!(s["details"]["kind"], "gateways");
    }
}
