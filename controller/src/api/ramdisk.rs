//! The ramdisk endpoints, always unauthenticated: `GET /v1/lookup` and
//! `POST /v1/heartbeat/{ident}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use ironclad_versioning::microversion::{
    ApiVersion, AGENT_STATUS, AGENT_TOKEN, AGENT_VERIFY_CA, AGENT_VERSION_IN_HEARTBEAT, RAMDISK_API,
};
use ironclad_versioning::ramdisk::{HeartbeatRequest, LookupConfig, LookupNode, LookupResponse};
use serde_json::Value;

use super::errors::{ApiError, ApiJson, ApiQuery};
use super::views;
use super::AppState;

fn require_ramdisk_api(version: ApiVersion) -> Result<(), ApiError> {
    if version < RAMDISK_API {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    Ok(())
}

/// The policy pushed to agents in every lookup reply.
pub fn lookup_config(state: &AppState, agent_token: Option<String>) -> LookupConfig {
    LookupConfig {
        heartbeat_timeout: Some(state.conductor.config().heartbeat_timeout.as_secs_f64()),
        agent_token,
        agent_token_required: Some(true),
        agent_md5_checksum_enable: Some(true),
        disable_deep_image_inspection: Some(false),
        permitted_image_formats: Some(vec!["raw".to_owned(), "qcow2".to_owned()]),
        agent_skip_bmc_detect: Some(false),
        enable_bios_bootloader_install: Some(false),
        tls_min_version: Some("1.2".to_owned()),
        tls_cipher_suites: None,
    }
}

/// `GET /v1/lookup?addresses=<macs>[&node_uuid=]`.
pub async fn lookup(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
) -> Result<Json<LookupResponse>, ApiError> {
    require_ramdisk_api(version)?;
    let macs: Vec<String> = query
        .get("addresses")
        .map(|list| list.split(',').filter_map(views::normalize_mac).collect())
        .unwrap_or_default();
    let node_uuid = query.get("node_uuid").filter(|u| !u.is_empty());
    if let Some(uuid) = node_uuid {
        if uuid::Uuid::parse_str(uuid).is_err() {
            return Err(ApiError::bad_request(format!(
                "Expected a UUID but received {uuid}."
            )));
        }
    }
    if macs.is_empty() && node_uuid.is_none() {
        return Err(ApiError::bad_request(
            "Incomplete lookup request: at least one valid MAC address in addresses or a node_uuid is required.",
        ));
    }
    let (node, token) = state
        .conductor
        .lookup(&macs, node_uuid.map(String::as_str), version >= AGENT_TOKEN)
        .await?;
    let mut shown = node.clone();
    crate::secrets::mask_node(&mut shown);
    Ok(Json(LookupResponse {
        node: LookupNode {
            uuid: node.uuid.clone(),
            properties: shown.properties,
            instance_info: shown.instance_info,
            driver_internal_info: shown.driver_internal_info,
            links: views::links(state.public_url(), "nodes", &node.uuid),
        },
        config: lookup_config(&state, token),
        heartbeat_timeout: None,
    }))
}

/// `POST /v1/heartbeat/{ident}`: checks and records the heartbeat, replies 202 at once.
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Path(ident): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<StatusCode, ApiError> {
    require_ramdisk_api(version)?;
    let gates = [
        ("agent_version", AGENT_VERSION_IN_HEARTBEAT),
        ("agent_token", AGENT_TOKEN),
        ("agent_verify_ca", AGENT_VERIFY_CA),
        ("agent_status", AGENT_STATUS),
        ("agent_status_message", AGENT_STATUS),
    ];
    for (field, needs) in gates {
        if body.get(field).is_some_and(|v| !v.is_null()) && version < needs {
            return Err(ApiError::bad_request(format!(
                "Field \"{field}\" not recognised in API version {version}; it needs {needs} or newer."
            )));
        }
    }
    let request: HeartbeatRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid heartbeat: {e}")))?;
    if request.agent_version.as_deref().is_none_or(str::is_empty) && request.agent_status.is_none()
    {
        return Err(ApiError::bad_request(
            "Agent did not transmit a version, and a version is required. Please update the agent being used.",
        ));
    }
    let url = url::Url::parse(&request.callback_url).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid callback_url {:?}: {e}",
            request.callback_url
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" if state.conductor.config().allow_insecure_agent => {}
        "http" => {
            return Err(ApiError::bad_request(
                "TLS is required by configuration: the agent's callback_url must use https.",
            ))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid callback_url scheme {other:?}: it must be http or https."
            )))
        }
    }
    state.conductor.heartbeat(&ident, &request, version).await?;
    Ok(StatusCode::ACCEPTED)
}
