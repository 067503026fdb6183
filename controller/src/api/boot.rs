//! Network boot over HTTP: the iPXE scripts (`/boot.ipxe`, `/ipxe/{mac or node}`)
//! and the files of `--http-root` under `/httpboot/` (deploy kernels and ramdisks).
//! None of these need authentication: firmware cannot present any.

use std::path::{Component, Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironclad_versioning::agent_api::Link;
use ironclad_versioning::controller_api::{DriverList, DriverSummary};

use super::errors::ApiError;
use super::AppState;
use crate::dhcp::normalize_mac;
use crate::drivers::ipxe;

fn script(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// `GET /boot.ipxe`: the generic chain-loading script DHCP hands to iPXE.
pub async fn chain(State(state): State<AppState>) -> Response {
    script(ipxe::chain_script(state.public_url()))
}

/// `GET /ipxe/{mac or node uuid}`: the script for one machine.
pub async fn node_script(
    State(state): State<AppState>,
    Path(ident): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.conductor.store();
    let node = match normalize_mac(&ident) {
        Ok(mac) => store.find_node_by_macs(&[mac]).await?,
        Err(_) if uuid::Uuid::parse_str(&ident).is_ok() => store.get_node(&ident).await?,
        Err(_) => None,
    };
    let Some(node) = node.filter(|n| n.boot_interface.as_deref() == Some("ipxe")) else {
        tracing::info!(ident, "iPXE script asked for by an unknown machine");
        return Ok(script(ipxe::unknown_script(&ident)));
    };
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    match ipxe::node_script(&node, state.public_url(), &request_id) {
        Ok(text) => {
            tracing::info!(node = %node.uuid, request_id, "iPXE script served");
            Ok(script(text))
        }
        Err(reason) => {
            tracing::warn!(node = %node.uuid, %reason, "cannot build the node's iPXE script");
            Ok(script(ipxe::unknown_script(&ident)))
        }
    }
}

/// A relative path with no `..`, root or prefix components.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let candidate = FsPath::new(path);
    candidate
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| candidate.to_owned())
}

/// `GET /httpboot/{*path}`: a file from `--http-root`, streamed.
pub async fn http_root_file(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let root = state.conductor.config().http_root.clone().ok_or_else(|| {
        ApiError::not_found("This controller serves no files: start it with --http-root DIR.")
    })?;
    let relative =
        safe_relative(&path).ok_or_else(|| ApiError::not_found(format!("No file {path}.")))?;
    let full = root.join(relative);
    let file = tokio::fs::File::open(&full)
        .await
        .map_err(|_| ApiError::not_found(format!("No file {path} under the HTTP root.")))?;
    let metadata = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", full.display())))?;
    if !metadata.is_file() {
        return Err(ApiError::not_found(format!(
            "No file {path} under the HTTP root."
        )));
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, metadata.len().to_string()),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/drivers`: the enabled hardware types.
pub async fn drivers(State(state): State<AppState>) -> Json<DriverList> {
    let host = state.conductor.config().conductor_name.clone();
    let base = state.public_url();
    let drivers = state
        .conductor
        .drivers()
        .names()
        .into_iter()
        .map(|name| DriverSummary {
            name: name.to_owned(),
            hosts: vec![host.clone()],
            driver_type: "dynamic".to_owned(),
            links: vec![
                Link::new(format!("{base}/v1/drivers/{name}"), "self"),
                Link::new(format!("{base}/drivers/{name}"), "bookmark"),
            ],
        })
        .collect();
    Json(DriverList { drivers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_root() {
        assert!(safe_relative("agent/kernel").is_some());
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("a/../../b").is_none());
    }
}
