//! `/v1/nodes`: create, list, show, patch, delete, and the state sub-resources.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironclad_versioning::controller_api::{
    BootDeviceInfo, BootDeviceRequest, Node, NodeCreate, NodeList, NodeStates, NodeValidation,
    PowerRequest, ProvisionRequest,
};
use ironclad_versioning::microversion::{
    first_newer_field, strip_newer_fields, ApiVersion, NODE_FIELD_VERSIONS,
};
use ironclad_versioning::states::{PowerTarget, ProvisionState, ProvisionTarget};
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiJson, ApiQuery};
use super::pagination::{next_link, parse_page};
use super::views::{self, NODE_READ_ONLY, NODE_SHORT_FIELDS};
use super::AppState;
use crate::conductor::states::{self, TargetError};
use crate::drivers::{BootDevice, InterfaceKind};
use crate::store::{NodeFilter, NodeSortKey};

type Query = BTreeMap<String, String>;

fn view(
    state: &AppState,
    node: &Node,
    version: ApiVersion,
) -> Result<Map<String, Value>, ApiError> {
    views::node_view(
        node,
        state.public_url(),
        state.conductor.reservation(&node.uuid),
        version,
    )
}

/// Fills unset interfaces with the hardware type's defaults and checks the set ones.
fn check_interfaces(state: &AppState, node: &mut Node) -> Result<(), ApiError> {
    state
        .conductor
        .drivers()
        .compose(node)
        .map_err(ApiError::bad_request)
}

/// `POST /v1/nodes`.
pub async fn create(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let request: NodeCreate = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid node: {e}")))?;
    let fields: Vec<&str> = request.fields.keys().map(String::as_str).collect();
    if let Some(field) = fields.iter().find(|f| NODE_READ_ONLY.contains(f)) {
        return Err(ApiError::bad_request(format!(
            "'{field}' is an internal attribute and can not be set"
        )));
    }
    if let Some(field) = first_newer_field(NODE_FIELD_VERSIONS, fields.iter().copied(), version) {
        return Err(ApiError::not_acceptable(format!(
            "The field \"{field}\" is not available in API version {version}."
        )));
    }
    let uuid = match &request.uuid {
        Some(text) => uuid::Uuid::parse_str(text)
            .map_err(|_| ApiError::bad_request(format!("Expected a UUID but received {text}.")))?
            .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let mut document = views::node_template(&uuid, &request.driver);
    for (key, value) in &request.fields {
        if document.get(key).is_none() {
            return Err(ApiError::bad_request(format!(
                "Unknown attribute for node: {key}"
            )));
        }
        document[key] = value.clone();
    }
    let mut node: Node = serde_json::from_value(document)
        .map_err(|e| ApiError::bad_request(format!("Invalid node: {e}")))?;
    if let Some(name) = &node.name {
        views::validate_name(name)?;
    }
    check_interfaces(&state, &mut node)?;
    let now = crate::timestamp_now();
    // Before 1.11 new nodes went straight to `available`, as Ironic does.
    node.provision_state = Some(if version < ApiVersion::new(1, 11) {
        ProvisionState::Available
    } else {
        ProvisionState::Enroll
    });
    node.provision_updated_at = Some(now.clone());
    node.conductor = Some(state.conductor.config().conductor_name.clone());
    node.created_at = Some(now);
    state.conductor.store().create_node(&node).await?;
    tracing::info!(node = %node.uuid, name = ?node.name, "node created");
    let location = format!("{}/v1/nodes/{}", state.public_url(), node.uuid);
    let body = view(&state, &node, version)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn list_nodes(
    state: &AppState,
    version: ApiVersion,
    query: &Query,
    detail: bool,
    path: &str,
) -> Result<Json<NodeList>, ApiError> {
    let detail_param = query
        .get("detail")
        .map(|d| d.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if query.contains_key("detail") && version < ApiVersion::new(1, 43) {
        return Err(ApiError::not_acceptable(
            "The detail parameter requires API version 1.43 or newer.",
        ));
    }
    let detail = detail || detail_param;
    if detail && query.contains_key("fields") {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    let page = parse_page(query, NodeSortKey::Id)?;
    let filter = NodeFilter {
        provision_state: query.get("provision_state").cloned(),
        driver: query.get("driver").cloned(),
    };
    let nodes = state.conductor.store().list_nodes(&filter, &page).await?;
    let mut fields: Option<Vec<String>> = None;
    let mut shown = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let full = view(state, node, version)?;
        if let Some(text) = query.get("fields") {
            if fields.is_none() {
                let all = view(state, node, ironclad_versioning::microversion::MAX_VERSION)?;
                fields = Some(views::parse_fields(
                    text,
                    &all,
                    NODE_FIELD_VERSIONS,
                    version,
                )?);
            }
        }
        let selected = match (&fields, detail) {
            (Some(f), _) => {
                let names: Vec<&str> = f.iter().map(String::as_str).collect();
                views::select(full, &names)
            }
            (None, true) => full,
            (None, false) => views::select(full, NODE_SHORT_FIELDS),
        };
        shown.push(Value::Object(selected));
    }
    let base = format!("{}{path}", state.public_url());
    let next = next_link(
        &base,
        query,
        page.limit,
        nodes.len(),
        nodes.last().map(|n| n.uuid.as_str()),
    );
    Ok(Json(NodeList { nodes: shown, next }))
}

/// `GET /v1/nodes`.
pub async fn list(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<NodeList>, ApiError> {
    list_nodes(&state, version, &query, false, "/v1/nodes").await
}

/// `GET /v1/nodes/detail`.
pub async fn list_detail(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<NodeList>, ApiError> {
    list_nodes(&state, version, &query, true, "/v1/nodes/detail").await
}

/// `GET /v1/nodes/{ident}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let node = state.conductor.load(&ident).await?;
    let full = view(&state, &node, version)?;
    match query.get("fields") {
        Some(text) => {
            let all = view(
                &state,
                &node,
                ironclad_versioning::microversion::MAX_VERSION,
            )?;
            let fields = views::parse_fields(text, &all, NODE_FIELD_VERSIONS, version)?;
            let names: Vec<&str> = fields.iter().map(String::as_str).collect();
            Ok(Json(views::select(full, &names)))
        }
        None => Ok(Json(full)),
    }
}

/// `PATCH /v1/nodes/{ident}` with an RFC 6902 JSON Patch.
pub async fn update(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiJson(operations): ApiJson<Value>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let found = state.conductor.load(&ident).await?;
    let _guard = state.conductor.lock(&found.uuid)?;
    let node = state.conductor.load(&found.uuid).await?;
    let current = node.provision_state.unwrap_or(ProvisionState::Available);
    if !states::allows_update(current) {
        return Err(ApiError::conflict(format!(
            "Node {} can not be updated while a state transition is in progress (state \"{current}\").",
            node.uuid
        )));
    }
    let mut patched = super::patch::apply_node_patch(&node, &operations, version)?;
    if let Some(name) = &patched.name {
        views::validate_name(name)?;
    }
    if patched.driver != node.driver {
        // A new hardware type brings its own default interfaces.
        // Interfaces the patch set explicitly stay; the others reset.
        for kind in InterfaceKind::ALL.iter().copied() {
            if kind.of(&patched) == kind.of(&node) {
                kind.set(&mut patched, None);
            }
        }
    }
    check_interfaces(&state, &mut patched)?;
    state.conductor.save(&mut patched).await?;
    Ok(Json(view(&state, &patched, version)?))
}

/// `DELETE /v1/nodes/{ident}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = state.conductor.load(&ident).await?;
    let _guard = state.conductor.lock(&found.uuid)?;
    let node = state.conductor.load(&found.uuid).await?;
    let current = node.provision_state.unwrap_or(ProvisionState::Available);
    if let Some(instance) = &node.instance_uuid {
        return Err(ApiError::conflict(format!(
            "Node {} is associated with instance {instance}.",
            node.uuid
        )));
    }
    if node.protected {
        return Err(ApiError::bad_request(format!(
            "Node {} is protected and cannot be deleted; unset protected first.",
            node.uuid
        )));
    }
    if !states::allows_delete(current) {
        return Err(ApiError::bad_request(format!(
            "Can not delete node {} while it is in provision state \"{current}\". Valid provision states to delete a node are: enroll, manageable, available, adopt failed.",
            node.uuid
        )));
    }
    state.conductor.store().delete_node(&node.uuid).await?;
    tracing::info!(node = %node.uuid, "node deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/nodes/{ident}/states`.
pub async fn states(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let node = state.conductor.load(&ident).await?;
    let mut map = match serde_json::to_value(NodeStates::of(&node)) {
        Ok(Value::Object(map)) => map,
        _ => return Err(ApiError::internal("cannot serialize node states")),
    };
    strip_newer_fields(NODE_FIELD_VERSIONS, &mut map, version);
    Ok(Json(map))
}

fn accepted(state: &AppState, uuid: &str) -> Response {
    let location = format!("{}/v1/nodes/{uuid}/states", state.public_url());
    (StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response()
}

/// `PUT /v1/nodes/{ident}/states/provision`.
pub async fn provision(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiJson(request): ApiJson<ProvisionRequest>,
) -> Result<Response, ApiError> {
    let target: ProvisionTarget = request.target.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid provision state target \"{}\".",
            request.target
        ))
    })?;
    let event = states::event_for_target(target, version).map_err(|e| match e {
        TargetError::TooNew { .. } => ApiError::not_acceptable(e.to_string()),
        TargetError::NotSupported(_) => ApiError::bad_request(e.to_string()),
    })?;
    if request.configdrive.is_some()
        && !matches!(
            target,
            ProvisionTarget::Active | ProvisionTarget::Deploy | ProvisionTarget::Rebuild
        )
    {
        return Err(ApiError::bad_request(
            "A configdrive can only be given with the active, deploy or rebuild targets.",
        ));
    }
    if matches!(request.configdrive, Some(Value::Object(_))) && version < ApiVersion::new(1, 56) {
        return Err(ApiError::not_acceptable(
            "A configdrive given as a JSON object requires API version 1.56 or newer.",
        ));
    }
    let node = state.conductor.provision(&ident, event, &request).await?;
    Ok(accepted(&state, &node.uuid))
}

/// `PUT /v1/nodes/{ident}/states/power`.
pub async fn power(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiJson(request): ApiJson<PowerRequest>,
) -> Result<Response, ApiError> {
    let target: PowerTarget = request.target.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid power state target \"{}\"; valid: power on, power off, rebooting, soft power off, soft rebooting.",
            request.target
        ))
    })?;
    let soft = matches!(target, PowerTarget::SoftOff | PowerTarget::SoftRebooting);
    if (soft || request.timeout.is_some()) && version < ApiVersion::new(1, 27) {
        return Err(ApiError::not_acceptable(
            "Soft power actions and timeouts require API version 1.27 or newer.",
        ));
    }
    let node = state.conductor.load(&ident).await?;
    let timeout = request.timeout.map(std::time::Duration::from_secs);
    state
        .conductor
        .set_power(&node.uuid, target, timeout)
        .await?;
    Ok(accepted(&state, &node.uuid))
}

/// `GET /v1/nodes/{ident}/validate`: each interface's verdict on the node's settings.
pub async fn validate(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> Result<Json<NodeValidation>, ApiError> {
    let node = state.conductor.load(&ident).await?;
    Ok(Json(state.conductor.drivers().validate(&node).await))
}

/// `GET /v1/nodes/{ident}/management/boot_device`.
pub async fn get_boot_device(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> Result<Json<BootDeviceInfo>, ApiError> {
    let node = state.conductor.load(&ident).await?;
    let (device, persistent) = state.conductor.boot_device(&node).await?;
    Ok(Json(BootDeviceInfo {
        boot_device: device.map(|d| d.as_str().to_owned()),
        persistent,
    }))
}

/// `PUT /v1/nodes/{ident}/management/boot_device`.
pub async fn set_boot_device(
    State(state): State<AppState>,
    Path(ident): Path<String>,
    ApiJson(request): ApiJson<BootDeviceRequest>,
) -> Result<StatusCode, ApiError> {
    let device = BootDevice::parse(&request.boot_device).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid boot device \"{}\"; valid: pxe, disk, cdrom, bios.",
            request.boot_device
        ))
    })?;
    state
        .conductor
        .set_boot_device(&ident, device, request.persistent.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/nodes/{ident}/management/boot_device/supported`.
pub async fn supported_boot_devices(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.conductor.load(&ident).await?;
    Ok(Json(serde_json::json!({
        "supported_boot_devices": ["pxe", "disk", "cdrom", "bios"]
    })))
}
