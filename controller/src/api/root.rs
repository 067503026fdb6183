//! `GET /` and `GET /v1/`.

use axum::extract::State;
use axum::{Extension, Json};
use ironclad_versioning::controller_api::{ControllerRoot, ControllerV1};
use ironclad_versioning::microversion::{ApiVersion, RAMDISK_API};

use super::AppState;

/// `GET /`: the version document agents read `default_version.version` from.
pub async fn root(State(state): State<AppState>) -> Json<ControllerRoot> {
    Json(ControllerRoot::new(state.public_url()))
}

/// `GET /v1/`: links to the resources.
pub async fn v1(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
) -> Json<ControllerV1> {
    Json(ControllerV1::new(
        state.public_url(),
        version >= RAMDISK_API,
    ))
}
