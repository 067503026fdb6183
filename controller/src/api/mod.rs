//! The Ironic-compatible REST API.
//!
//! Submodules: [`root`] (`/`, `/v1/`), [`nodes`], [`ports`], [`ramdisk`] (lookup and
//! heartbeat), [`boot`] (iPXE scripts, `/httpboot/` files, `/v1/drivers`),
//! [`versioning`] (microversion middleware), [`errors`] (error bodies),
//! [`pagination`] and [`patch`] (pure request logic), [`views`] (how records are shown).

pub mod boot;
pub mod errors;
pub mod nodes;
pub mod pagination;
pub mod patch;
pub mod ports;
pub mod ramdisk;
pub mod root;
pub mod versioning;
pub mod views;

use axum::routing::{get, post, put};
use axum::Router;

use crate::conductor::Conductor;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The conductor (and through it the store and settings).
    pub conductor: Conductor,
}

impl AppState {
    /// The base URL for links.
    pub fn public_url(&self) -> &str {
        &self.conductor.config().public_url
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root::root))
        .route("/v1", get(root::v1))
        .route("/v1/", get(root::v1))
        .route("/v1/nodes", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/detail", get(nodes::list_detail))
        .route(
            "/v1/nodes/{ident}",
            get(nodes::show).patch(nodes::update).delete(nodes::delete),
        )
        .route("/v1/nodes/{ident}/states", get(nodes::states))
        .route("/v1/nodes/{ident}/validate", get(nodes::validate))
        .route(
            "/v1/nodes/{ident}/management/boot_device",
            get(nodes::get_boot_device).put(nodes::set_boot_device),
        )
        .route(
            "/v1/nodes/{ident}/management/boot_device/supported",
            get(nodes::supported_boot_devices),
        )
        .route("/v1/drivers", get(boot::drivers))
        .route("/v1/drivers/", get(boot::drivers))
        .route("/v1/nodes/{ident}/states/provision", put(nodes::provision))
        .route("/v1/nodes/{ident}/states/power", put(nodes::power))
        .route("/v1/nodes/{ident}/ports", get(ports::list_of_node))
        .route(
            "/v1/nodes/{ident}/ports/detail",
            get(ports::list_detail_of_node),
        )
        .route("/v1/ports", get(ports::list).post(ports::create))
        .route("/v1/ports/", get(ports::list).post(ports::create))
        .route("/v1/ports/detail", get(ports::list_detail))
        .route("/v1/ports/{uuid}", get(ports::show).delete(ports::delete))
        .route("/v1/lookup", get(ramdisk::lookup))
        .route("/v1/lookup/", get(ramdisk::lookup))
        .route("/v1/heartbeat/{ident}", post(ramdisk::heartbeat))
        .route("/boot.ipxe", get(boot::chain))
        .route("/ipxe/{ident}", get(boot::node_script))
        .route("/httpboot/{*path}", get(boot::http_root_file))
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(axum::middleware::from_fn(versioning::negotiate_version))
        .with_state(state)
}
