//! The admin endpoint's bearer token: required for everything but the probes (`/healthz`,
//! `/readyz`), `/metrics` and the module server (`/wasm/...`, which serves only modules the
//! published configuration uses, by digest).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The admin endpoint's authentication: a bearer token, or none (loopback only).
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    token_digest: Option<[u8; 32]>,
}

/// The shortest token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

impl AdminAuth {
    /// No token: for an admin endpoint on a loopback address only.
    pub fn none() -> AdminAuth {
        AdminAuth::default()
    }

    /// Requires `token` (surrounding whitespace ignored), which must be at least
    /// [`MIN_TOKEN_BYTES`] long.
    pub fn bearer(token: &str) -> Result<AdminAuth, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "the admin token must be at least {MIN_TOKEN_BYTES} characters"
            ));
        }
        Ok(AdminAuth {
            token_digest: Some(Sha256::digest(token.as_bytes()).into()),
        })
    }

    /// Whether a token is required.
    pub fn enabled(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Whether `path` is open to anyone.
    pub fn is_open(path: &str) -> bool {
        matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/wasm/")
    }

    /// Whether the request's `Authorization` header carries the token (compared in constant
    /// time over the tokens' digests).
    fn admits(&self, request: &Request) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The middleware: 401 without the token where one is required.
pub async fn require_token(
    State(auth): State<Arc<AdminAuth>>,
    request: Request,
    next: Next,
) -> Response {
    if AdminAuth::is_open(request.uri().path()) || auth.admits(&request) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this endpoint needs the admin token: Authorization: Bearer TOKEN\n",
    )
        .into_response()
}

/// `router` behind [`require_token`].
pub fn protect(router: axum::Router, auth: AdminAuth) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(auth),
        require_token,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status(router: &axum::Router, path: &str, token: Option<&str>) -> StatusCode {
        let mut request = axum::http::Request::get(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        router
            .clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    fn router(auth: AdminAuth) -> axum::Router {
        let ok = || async { "ok" };
        protect(
            axum::Router::new()
                .route("/status", get(ok))
                .route("/proxies", get(ok))
                .route("/healthz", get(ok))
                .route("/readyz", get(ok))
                .route("/metrics", get(ok))
                .route("/wasm/{sha}", get(ok)),
            auth,
        )
    }

    #[tokio::test]
    async fn status_requires_the_token_and_probes_metrics_and_modules_do_not() {
        let token = "a-token-of-enough-length";
        let r = router(AdminAuth::bearer(token).unwrap());
        for open in ["/healthz", "/readyz", "/metrics", "/wasm/abc"] {
            assert_eq!(status(&r, open, None).await, StatusCode::OK, "{open}");
        }
        for closed in ["/status", "/proxies"] {
            assert_eq!(status(&r, closed, None).await, StatusCode::UNAUTHORIZED);
            assert_eq!(
                status(&r, closed, Some("a-token-of-enough-lengtX")).await,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(status(&r, closed, Some(token)).await, StatusCode::OK);
        }
        let open = router(AdminAuth::none());
        assert_eq!(status(&open, "/status", None).await, StatusCode::OK);
        assert!(AdminAuth::bearer("short").is_err());
    }
}
