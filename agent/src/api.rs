//! The agent's HTTP API (axum), wire-compatible with ironic-python-agent.
//!
//! Routes: `/`, `/v1/`, `/v1/status`, `/v1/commands/`, `/v1/commands/{id}` and
//! their un-versioned and slash-less aliases. Every `/v1/commands*` call needs
//! `?agent_token=`. Every error is a `{faultcode, faultstring}` body.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ironclad_versioning::agent_api::{
    AgentFault, AgentRoot, AgentStatus, AgentV1, CommandList, CommandRequest, FaultCode,
};
use serde_json::Value;

use crate::commands::{CommandExecutor, ExecuteError};

/// Shared state of the API handlers.
#[derive(Debug)]
pub struct ApiState {
    /// The command executor.
    pub executor: Arc<CommandExecutor>,
    /// The agent token; `None` means every command call is refused.
    pub token: Option<String>,
    /// Start time, seconds since the epoch.
    pub started_at: f64,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// An error reply with a fault body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The fault string.
    pub faultstring: String,
}

impl ApiError {
    /// An error with `status` and `faultstring`.
    pub fn new(status: StatusCode, faultstring: impl Into<String>) -> Self {
        Self {
            status,
            faultstring: faultstring.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = AgentFault {
            faultcode: FaultCode::for_status(self.status.as_u16()),
            faultstring: self.faultstring,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ExecuteError> for ApiError {
    fn from(e: ExecuteError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, e.to_string())
    }
}

type Shared = State<Arc<ApiState>>;

fn query_map(raw: Option<String>) -> HashMap<String, String> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

fn wants_wait(q: &HashMap<String, String>) -> bool {
    q.get("wait")
        .is_some_and(|w| w.eq_ignore_ascii_case("true"))
}

fn check_token(state: &ApiState, q: &HashMap<String, String>) -> Result<(), ApiError> {
    match (&state.token, q.get("agent_token")) {
        (Some(expected), Some(given))
            if constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: Token invalid.",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn root_url(state: &ApiState, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", state.scheme)
}

async fn root(State(state): Shared, headers: HeaderMap) -> Json<AgentRoot> {
    Json(AgentRoot::new(&root_url(&state, &headers)))
}

async fn v1(State(state): Shared, headers: HeaderMap) -> Json<AgentV1> {
    Json(AgentV1::new(&root_url(&state, &headers)))
}

async fn status(State(state): Shared) -> Json<AgentStatus> {
    Json(AgentStatus {
        started_at: state.started_at,
        version: ironclad_versioning::IRONCLAD_VERSION.to_owned(),
    })
}

async fn list_commands(
    State(state): Shared,
    RawQuery(raw): RawQuery,
) -> Result<Json<CommandList>, ApiError> {
    check_token(&state, &query_map(raw))?;
    Ok(Json(CommandList {
        commands: state.executor.list(),
    }))
}

async fn get_command(
    State(state): Shared,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query_map(raw);
    check_token(&state, &q)?;
    match state.executor.get(&id, wants_wait(&q)).await {
        Some(result) => Ok(Json(result).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Not found: Command Result with id {id} not found."),
        )),
    }
}

/// Parses a command request body the way IPA does.
pub fn parse_command(body: &[u8]) -> Result<CommandRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("400 Bad Request: Failed to decode JSON object: {e}"),
        )
    })?;
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: Missing or invalid name or params",
        )
    };
    let Value::Object(mut map) = value else {
        return Err(invalid());
    };
    let name = match map.remove("name") {
        Some(Value::String(name)) => name,
        _ => return Err(invalid()),
    };
    let params = match map.remove("params") {
        Some(Value::Object(params)) => params,
        _ => return Err(invalid()),
    };
    Ok(CommandRequest { name, params })
}

async fn post_command(
    State(state): Shared,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query_map(raw);
    check_token(&state, &q)?;
    let request = parse_command(&body)?;
    let result = state.executor.execute(request, wants_wait(&q)).await?;
    Ok(Json(result).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "404 Not Found: The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "405 Method Not Allowed: The method is not allowed for the requested URL.",
    )
}

/// The API router.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut router = Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/v1/", get(v1));
    for prefix in ["/v1", ""] {
        router = router
            .route(&format!("{prefix}/status"), get(status))
            .route(&format!("{prefix}/status/"), get(status))
            .route(
                &format!("{prefix}/commands"),
                get(list_commands).post(post_command),
            )
            .route(
                &format!("{prefix}/commands/"),
                get(list_commands).post(post_command),
            )
            .route(&format!("{prefix}/commands/{{id}}"), get(get_command));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    tracing::info!("{method} {path} → {}", response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_like_ipa() {
        let e = parse_command(b"{not json").unwrap_err();
        assert!(e
            .faultstring
            .starts_with("400 Bad Request: Failed to decode JSON object: "));
        for bad in [
            &br#"{"name": "a.b"}"#[..],
            br#"{"params": {}}"#,
            br#"{"name": "a.b", "params": []}"#,
            br#"{"name": 1, "params": {}}"#,
            br#"[]"#,
        ] {
            let e = parse_command(bad).unwrap_err();
            assert_eq!(
                e.faultstring,
                "400 Bad Request: Missing or invalid name or params"
            );
        }
        let ok = parse_command(br#"{"name": "standby.sync", "params": {}}"#).unwrap();
        assert_eq!(ok.split_name(), Some(("standby", "sync")));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
