//! `/v1/ports` and `/v1/nodes/{ident}/ports`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironclad_versioning::controller_api::{Port, PortCreate, PortList};
use ironclad_versioning::microversion::{first_newer_field, ApiVersion, PORT_FIELD_VERSIONS};
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiJson, ApiQuery};
use super::pagination::{next_link, parse_page};
use super::views::{self, PORT_READ_ONLY, PORT_SHORT_FIELDS};
use super::AppState;
use crate::store::{PortFilter, PortSortKey};

type Query = BTreeMap<String, String>;

/// `POST /v1/ports`.
pub async fn create(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let request: PortCreate = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid port: {e}")))?;
    let fields: Vec<&str> = request.fields.keys().map(String::as_str).collect();
    if let Some(field) = fields.iter().find(|f| PORT_READ_ONLY.contains(f)) {
        return Err(ApiError::bad_request(format!(
            "'{field}' is an internal attribute and can not be set"
        )));
    }
    if let Some(field) = first_newer_field(PORT_FIELD_VERSIONS, fields.iter().copied(), version) {
        return Err(ApiError::not_acceptable(format!(
            "The field \"{field}\" is not available in API version {version}."
        )));
    }
    let address = views::normalize_mac(&request.address).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Expected a MAC address but received {}.",
            request.address
        ))
    })?;
    let node = state
        .conductor
        .store()
        .get_node(&request.node_uuid)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(format!("Node {} could not be found.", request.node_uuid))
        })?;
    let uuid = match &request.uuid {
        Some(text) => uuid::Uuid::parse_str(text)
            .map_err(|_| ApiError::bad_request(format!("Expected a UUID but received {text}.")))?
            .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let mut document = views::port_template(&uuid, &address, &node.uuid);
    for (key, value) in &request.fields {
        if document.get(key).is_none() {
            return Err(ApiError::bad_request(format!(
                "Unknown attribute for port: {key}"
            )));
        }
        document[key] = value.clone();
    }
    let mut port: Port = serde_json::from_value(document)
        .map_err(|e| ApiError::bad_request(format!("Invalid port: {e}")))?;
    port.created_at = Some(crate::timestamp_now());
    state.conductor.store().create_port(&port).await?;
    tracing::info!(port = %port.uuid, node = %port.node_uuid, address = %port.address, "port created");
    let location = format!("{}/v1/ports/{}", state.public_url(), port.uuid);
    let body = views::port_view(&port, state.public_url(), version)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn list_ports(
    state: &AppState,
    version: ApiVersion,
    query: &Query,
    detail: bool,
    node: Option<String>,
    path: &str,
) -> Result<Json<PortList>, ApiError> {
    let page = parse_page(query, PortSortKey::Id)?;
    let node_uuid = match node.or_else(|| query.get("node").or(query.get("node_uuid")).cloned()) {
        Some(ident) => Some(state.conductor.load(&ident).await?.uuid),
        None => None,
    };
    let address = match query.get("address") {
        Some(text) => Some(views::normalize_mac(text).ok_or_else(|| {
            ApiError::bad_request(format!("Expected a MAC address but received {text}."))
        })?),
        None => None,
    };
    let filter = PortFilter { node_uuid, address };
    let ports = state.conductor.store().list_ports(&filter, &page).await?;
    let mut shown = Vec::with_capacity(ports.len());
    for port in &ports {
        let full = views::port_view(port, state.public_url(), version)?;
        let full = if detail {
            full
        } else {
            views::select(full, PORT_SHORT_FIELDS)
        };
        shown.push(Value::Object(full));
    }
    let base = format!("{}{path}", state.public_url());
    let next = next_link(
        &base,
        query,
        page.limit,
        ports.len(),
        ports.last().map(|p| p.uuid.as_str()),
    );
    Ok(Json(PortList { ports: shown, next }))
}

fn wants_detail(query: &Query) -> bool {
    query
        .get("detail")
        .is_some_and(|d| d.eq_ignore_ascii_case("true"))
}

/// `GET /v1/ports`.
pub async fn list(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<PortList>, ApiError> {
    let detail = wants_detail(&query);
    list_ports(&state, version, &query, detail, None, "/v1/ports").await
}

/// `GET /v1/ports/detail`.
pub async fn list_detail(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<PortList>, ApiError> {
    list_ports(&state, version, &query, true, None, "/v1/ports/detail").await
}

/// `GET /v1/nodes/{ident}/ports`.
pub async fn list_of_node(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<PortList>, ApiError> {
    let detail = wants_detail(&query);
    let path = format!("/v1/nodes/{ident}/ports");
    list_ports(&state, version, &query, detail, Some(ident), &path).await
}

/// `GET /v1/nodes/{ident}/ports/detail`.
pub async fn list_detail_of_node(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<PortList>, ApiError> {
    let path = format!("/v1/nodes/{ident}/ports/detail");
    list_ports(&state, version, &query, true, Some(ident), &path).await
}

/// `GET /v1/ports/{uuid}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(uuid): Path<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let port = state
        .conductor
        .store()
        .get_port(&uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Port {uuid} could not be found.")))?;
    Ok(Json(views::port_view(&port, state.public_url(), version)?))
}

/// `DELETE /v1/ports/{uuid}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let port = state
        .conductor
        .store()
        .get_port(&uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Port {uuid} could not be found.")))?;
    let _guard = state.conductor.lock(&port.node_uuid)?;
    state.conductor.store().delete_port(&port.uuid).await?;
    tracing::info!(port = %port.uuid, "port deleted");
    Ok(StatusCode::NO_CONTENT)
}
