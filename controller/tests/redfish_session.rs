//! Redfish behaviour sushy-tools cannot show: session authentication (it has no
//! SessionService), ETag/If-Match on PATCH (it sends no ETags), the full boot
//! override for picky vendors, and real 5xx answers. A stand-in BMC (an in-test
//! axum server) plays those parts; it is a stand-in, not an emulator, and says
//! only what these checks need.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ironclad_controller::drivers::{BootDevice, DriverRegistry, DriverSettings};
use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::{PowerState, PowerTarget};
use serde_json::{json, Value};

#[derive(Default)]
struct Bmc {
    tokens: Vec<String>,
    logins: u32,
    failures_left: u32,
    etag: u32,
    patches: Vec<(Option<String>, Value)>,
    power: String,
    boot: Value,
}

type Shared = Arc<Mutex<Bmc>>;

fn authorized(bmc: &Bmc, headers: &HeaderMap) -> bool {
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| bmc.tokens.iter().any(|k| k == t))
}

fn failing(bmc: &mut Bmc) -> Option<Response> {
    if bmc.failures_left > 0 {
        bmc.failures_left -= 1;
        return Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"message": "BMC busy",
                    "@Message.ExtendedInfo": [{"Message": "The service is temporarily unavailable."}]}})),
            )
                .into_response(),
        );
    }
    None
}

async fn root() -> Json<Value> {
    Json(json!({
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
        "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
    }))
}

async fn login(State(bmc): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut bmc = bmc.lock().unwrap();
    if body["UserName"] != "admin" || body["Password"] != "secret" {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    bmc.logins += 1;
    let token = format!("token-{}", bmc.logins);
    bmc.tokens.push(token.clone());
    (
        StatusCode::CREATED,
        [
            ("x-auth-token", token),
            (
                "location",
                "/redfish/v1/SessionService/Sessions/1".to_owned(),
            ),
        ],
        Json(json!({})),
    )
        .into_response()
}

async fn systems(State(bmc): State<Shared>, headers: HeaderMap) -> Response {
    let bmc = bmc.lock().unwrap();
    if !authorized(&bmc, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})).into_response()
}

async fn system(State(bmc): State<Shared>, headers: HeaderMap) -> Response {
    let mut bmc = bmc.lock().unwrap();
    if let Some(fail) = failing(&mut bmc) {
        return fail;
    }
    if !authorized(&bmc, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [("etag", format!("W/\"{}\"", bmc.etag))],
        Json(json!({
            "Manufacturer": "Supermicro",
            "PowerState": bmc.power,
            "Boot": bmc.boot,
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]
            }}
        })),
    )
        .into_response()
}

async fn patch_system(
    State(bmc): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut bmc = bmc.lock().unwrap();
    if !authorized(&bmc, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    bmc.patches.push((if_match.clone(), body.clone()));
    if if_match != Some(format!("W/\"{}\"", bmc.etag)) {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    bmc.etag += 1;
    if let Some(boot) = body["Boot"].as_object() {
        for (k, v) in boot {
            bmc.boot[k] = v.clone();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(bmc): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut bmc = bmc.lock().unwrap();
    if !authorized(&bmc, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    bmc.power = match body["ResetType"].as_str() {
        Some("On") => "On".to_owned(),
        Some("ForceOff") => "Off".to_owned(),
        _ => return StatusCode::BAD_REQUEST.into_response(),
    };
    StatusCode::NO_CONTENT.into_response()
}

async fn start() -> (String, Shared) {
    let bmc: Shared = Arc::new(Mutex::new(Bmc {
        power: "Off".to_owned(),
        boot: json!({"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "None",
                     "BootSourceOverrideMode": "UEFI"}),
        ..Bmc::default()
    }));
    let app = Router::new()
        .route("/redfish/v1", get(root))
        .route("/redfish/v1/SessionService/Sessions", post(login))
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/1", get(system).patch(patch_system))
        .route(
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .with_state(bmc.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bmc)
}

fn node(url: &str, password: &str, auth: &str) -> Node {
    let mut node: Node = serde_json::from_value(ironclad_controller::api::views::node_template(
        "n1", "redfish",
    ))
    .unwrap();
    node.driver_info = json!({
        "redfish_address": url, "redfish_username": "admin", "redfish_password": password,
        "redfish_auth_type": auth
    })
    .as_object()
    .unwrap()
    .clone();
    node.power_interface = Some("redfish".to_owned());
    node.management_interface = Some("redfish".to_owned());
    node
}

fn registry() -> DriverRegistry {
    let mut settings = DriverSettings::new("http://127.0.0.1:6385");
    settings.redfish_attempts = 3;
    settings.redfish_retry_interval = Duration::from_millis(50);
    settings.power_state_change_timeout = Duration::from_secs(5);
    DriverRegistry::new(&settings)
}

#[tokio::test]
async fn sessions_etags_full_boot_overrides_and_5xx_retries() {
    let (url, bmc) = start().await;
    let drivers = registry();
    let n = node(&url, "secret", "auto");

    // auto picks the advertised SessionService; the token rides on every request.
    let power = drivers.power(&n).unwrap();
    assert_eq!(power.get_power_state(&n).await.unwrap(), PowerState::Off);
    assert_eq!(
        power
            .set_power_state(&n, PowerTarget::On, None)
            .await
            .unwrap(),
        PowerState::On
    );
    assert_eq!(bmc.lock().unwrap().logins, 1, "one session reused");

    // PATCH carries If-Match; Supermicro gets target, enabled and mode every time.
    let management = drivers.management(&n).unwrap();
    management
        .set_boot_device(&n, BootDevice::Pxe, false)
        .await
        .unwrap();
    {
        let bmc = bmc.lock().unwrap();
        let (if_match, body) = bmc.patches.last().unwrap();
        assert_eq!(if_match.as_deref(), Some("W/\"0\""));
        assert_eq!(
            body,
            &json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}})
        );
    }
    assert_eq!(
        management.get_boot_device(&n).await.unwrap(),
        (Some(BootDevice::Pxe), Some(false))
    );

    // An expired session: one fresh login, then the request goes through.
    bmc.lock().unwrap().tokens.clear();
    assert_eq!(power.get_power_state(&n).await.unwrap(), PowerState::On);
    assert_eq!(bmc.lock().unwrap().logins, 2);

    // Two 503s are retried; three exhaust the attempts with the BMC's message.
    bmc.lock().unwrap().failures_left = 2;
    assert_eq!(power.get_power_state(&n).await.unwrap(), PowerState::On);
    bmc.lock().unwrap().failures_left = 3;
    let error = power.get_power_state(&n).await.unwrap_err().to_string();
    assert!(
        error.contains("after 3 attempts")
            && error.contains("503")
            && error.contains("temporarily unavailable"),
        "{error}"
    );

    // A reset type the BMC does not offer is refused before sending.
    let error = power
        .set_power_state(&n, PowerTarget::SoftOff, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("GracefulShutdown") && error.contains("ForceOff"),
        "{error}"
    );

    // Wrong password with session auth: a clear refusal.
    let wrong = node(&url, "nope", "session");
    let error = drivers
        .power(&wrong)
        .unwrap()
        .get_power_state(&wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused the credentials"), "{error}");
}
