//! Microversion negotiation: every request gets an [`ApiVersion`] in its
//! extensions and every response the three version headers.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ironclad_versioning::microversion::{
    negotiate, ApiVersion, GENERIC_VERSION_HEADER, MAX_VERSION, MAX_VERSION_HEADER, MIN_VERSION,
    MIN_VERSION_HEADER, VERSION_HEADER,
};

use super::errors::ApiError;

fn header(name: &str, value: String) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(&value).ok()?,
    ))
}

fn add_version_headers(response: &mut Response, version: ApiVersion) {
    let headers = response.headers_mut();
    for (name, value) in [
        header(MIN_VERSION_HEADER, MIN_VERSION.to_string()),
        header(MAX_VERSION_HEADER, MAX_VERSION.to_string()),
        header(VERSION_HEADER, version.to_string()),
    ]
    .into_iter()
    .flatten()
    {
        headers.insert(name, value);
    }
}

/// Middleware: negotiates the version (406 on `/v1` when it cannot be served).
pub async fn negotiate_version(mut request: Request, next: Next) -> Response {
    let (ironic, generic) = {
        let text = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        (text(VERSION_HEADER), text(GENERIC_VERSION_HEADER))
    };
    let on_v1 = request.uri().path().starts_with("/v1");
    let version = match negotiate(ironic.as_deref(), generic.as_deref()) {
        Ok(version) => version,
        Err(error) if on_v1 => {
            let mut response = ApiError::not_acceptable(error.to_string()).into_response();
            add_version_headers(&mut response, MIN_VERSION);
            return response;
        }
        Err(_) => MIN_VERSION,
    };
    request.extensions_mut().insert(version);
    let mut response = next.run(request).await;
    add_version_headers(&mut response, version);
    response
}
