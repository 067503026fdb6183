//! The BMC's HTTP surface: Redfish resources and actions, ETags, Basic auth,
//! fault injection and the lab's control endpoint.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::{
    BootMode, Machine, MachineError, MediaState, OverrideEnabled, OverrideTarget, PowerState,
    Shared, Snapshot,
};

type AppState<M> = State<Arc<Shared<M>>>;

const MANAGER_ID: &str = "BMC";
const CHASSIS_ID: &str = "Chassis";
const MEDIA_ID: &str = "Cd";
const RESET_TYPES: [&str; 8] = [
    "On",
    "ForceOn",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
    "Nmi",
];

/// A Redfish error answer: status plus a `Base` message.
pub(super) struct RedfishError {
    status: StatusCode,
    message_id: &'static str,
    message: String,
}

impl RedfishError {
    fn new(status: StatusCode, message_id: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message_id,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Base.1.0.GeneralError", message)
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Base.1.0.ResourceMissingAtURI",
            format!("The resource at {what} does not exist."),
        )
    }

    fn machine(error: MachineError) -> Self {
        match error {
            MachineError::PoweredOff => Self::new(
                StatusCode::CONFLICT,
                "Base.1.0.ActionNotSupported",
                "The action needs the system to be powered on.",
            ),
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Base.1.0.InternalError",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for RedfishError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": "Base.1.0.GeneralError",
                "message": self.message,
                "@Message.ExtendedInfo": [{
                    "@odata.type": "#Message.v1_0_0.Message",
                    "MessageId": self.message_id,
                    "Message": self.message,
                    "Severity": "Warning",
                    "Resolution": "Correct the request and resubmit it.",
                }],
            }
        });
        (self.status, Json(body)).into_response()
    }
}

type Answer = Result<Response, RedfishError>;

fn etag_of(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    format!("\"{}\"", hex::encode(&digest[..8]))
}

/// A JSON resource with its ETag.
fn resource(value: Value) -> Response {
    let etag = etag_of(&value);
    let mut response = Json(value).into_response();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn odata(id: &str) -> Value {
    json!({ "@odata.id": id })
}

/// Registers `path` and `path/` (sushy asks for the service root with a slash).
pub(super) fn router<M: Machine>(shared: Arc<Shared<M>>) -> Router {
    let routes: Router<Arc<Shared<M>>> = Router::new()
        .route("/", get(versions))
        .route("/redfish", get(versions))
        .route("/redfish/", get(versions))
        .route("/redfish/v1", get(service_root::<M>))
        .route("/redfish/v1/", get(service_root::<M>))
        .route("/redfish/v1/Systems", get(systems::<M>))
        .route(
            "/redfish/v1/Systems/{id}",
            get(system::<M>).patch(patch_system::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
            post(reset::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/EthernetInterfaces",
            get(nics::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}",
            get(nic::<M>),
        )
        .route("/redfish/v1/Systems/{id}/Processors", get(processors::<M>))
        .route(
            "/redfish/v1/Systems/{id}/Processors/{cpu}",
            get(processor::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/SimpleStorage",
            get(simple_storages::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/SimpleStorage/{storage}",
            get(simple_storage::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/VirtualMedia",
            get(system_media_collection::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/VirtualMedia/{dev}",
            get(system_media::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/VirtualMedia/{dev}/Actions/VirtualMedia.InsertMedia",
            post(system_insert::<M>),
        )
        .route(
            "/redfish/v1/Systems/{id}/VirtualMedia/{dev}/Actions/VirtualMedia.EjectMedia",
            post(system_eject::<M>),
        )
        .route("/redfish/v1/Managers", get(managers::<M>))
        .route("/redfish/v1/Managers/{id}", get(manager::<M>))
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia",
            get(manager_media_collection::<M>),
        )
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia/{dev}",
            get(manager_media::<M>),
        )
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia/{dev}/Actions/VirtualMedia.InsertMedia",
            post(manager_insert::<M>),
        )
        .route(
            "/redfish/v1/Managers/{id}/VirtualMedia/{dev}/Actions/VirtualMedia.EjectMedia",
            post(manager_eject::<M>),
        )
        .route("/redfish/v1/Chassis", get(chassis_collection::<M>))
        .route("/redfish/v1/Chassis/{id}", get(chassis::<M>))
        .route("/ironclad-lab/fail-next", post(fail_next::<M>))
        .route("/ironclad-lab/state", get(lab_state::<M>))
        .fallback(not_found);
    routes
        .layer(middleware::from_fn_with_state(shared.clone(), auth::<M>))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            inject_faults::<M>,
        ))
        .with_state(shared)
}

async fn not_found(request: Request) -> RedfishError {
    RedfishError::not_found(request.uri().path())
}

/// Answers 500 while injected failures are pending (the lab's own endpoints
/// are exempt, so a test can always turn the knob back).
async fn inject_faults<M: Machine>(
    State(shared): AppState<M>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/ironclad-lab/") {
        let failed = shared
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            tracing::info!(path = %request.uri().path(), "injected failure: answering 500");
            return RedfishError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Base.1.0.InternalError",
                "Injected failure (ironclad-lab fail-next).",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// HTTP Basic auth on everything except the service root and version document.
async fn auth<M: Machine>(State(shared): AppState<M>, request: Request, next: Next) -> Response {
    let Some(credentials) = &shared.config.credentials else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if matches!(
        path,
        "/" | "/redfish" | "/redfish/" | "/redfish/v1" | "/redfish/v1/"
    ) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let expected = format!("{}:{}", credentials.username, credentials.password);
    let ok = given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()));
    if ok {
        return next.run(request).await;
    }
    let mut response = RedfishError::new(
        StatusCode::UNAUTHORIZED,
        "Base.1.0.InsufficientPrivilege",
        "Authentication with valid HTTP Basic credentials is required.",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Ironclad lab BMC\""),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_system<M>(shared: &Shared<M>, id: &str) -> Result<(), RedfishError> {
    if id == shared.config.system_id {
        Ok(())
    } else {
        Err(RedfishError::not_found(&format!(
            "/redfish/v1/Systems/{id}"
        )))
    }
}

async fn versions() -> Response {
    Json(json!({ "v1": "/redfish/v1/" })).into_response()
}

async fn service_root<M: Machine>(State(shared): AppState<M>) -> Response {
    resource(json!({
        "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
        "@odata.id": "/redfish/v1/",
        "Id": "RootService",
        "Name": "Ironclad lab BMC",
        "RedfishVersion": "1.5.0",
        "UUID": shared.config.uuid,
        "Product": "Ironclad virtual BMC",
        "Systems": odata("/redfish/v1/Systems"),
        "Managers": odata("/redfish/v1/Managers"),
        "Chassis": odata("/redfish/v1/Chassis"),
    }))
}

fn collection(odata_type: &str, id: &str, name: &str, members: &[String]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| odata(m)).collect();
    json!({
        "@odata.type": format!("#{odata_type}.{odata_type}"),
        "@odata.id": id,
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": members,
    })
}

async fn systems<M: Machine>(State(shared): AppState<M>) -> Response {
    let member = format!("/redfish/v1/Systems/{}", shared.config.system_id);
    resource(collection(
        "ComputerSystemCollection",
        "/redfish/v1/Systems",
        "Computer System Collection",
        &[member],
    ))
}

fn system_json<M>(shared: &Shared<M>, snapshot: &Snapshot) -> Value {
    let config = &shared.config;
    let base = format!("/redfish/v1/Systems/{}", config.system_id);
    json!({
        "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
        "@odata.id": base,
        "Id": config.system_id,
        "Name": config.system_id,
        "UUID": config.uuid,
        "Manufacturer": "QEMU",
        "Model": "Ironclad lab node (TCG)",
        "SerialNumber": config.uuid,
        "SystemType": "Physical",
        "PowerState": snapshot.power.as_str(),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Boot": {
            "BootSourceOverrideEnabled": snapshot.boot.enabled.as_str(),
            "BootSourceOverrideTarget": snapshot.boot.target.as_str(),
            "BootSourceOverrideTarget@Redfish.AllowableValues": OverrideTarget::ALL,
            "BootSourceOverrideMode": snapshot.boot.mode.as_str(),
        },
        "ProcessorSummary": {
            "Count": config.cpus,
            "Model": "QEMU TCG CPU",
            "Status": { "State": "Enabled", "Health": "OK" },
        },
        "MemorySummary": {
            "TotalSystemMemoryGiB": f64::from(config.memory_mib) / 1024.0,
            "Status": { "State": "Enabled", "Health": "OK" },
        },
        "Processors": odata(&format!("{base}/Processors")),
        "EthernetInterfaces": odata(&format!("{base}/EthernetInterfaces")),
        "SimpleStorage": odata(&format!("{base}/SimpleStorage")),
        "VirtualMedia": odata(&format!("{base}/VirtualMedia")),
        "Links": {
            "ManagedBy": [odata(&format!("/redfish/v1/Managers/{MANAGER_ID}"))],
            "Chassis": [odata(&format!("/redfish/v1/Chassis/{CHASSIS_ID}"))],
        },
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": format!("{base}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": RESET_TYPES,
            }
        },
    })
}

async fn system<M: Machine>(State(shared): AppState<M>, Path(id): Path<String>) -> Answer {
    check_system(&shared, &id)?;
    let snapshot = shared.inner.lock().await.snapshot();
    Ok(resource(system_json(&shared, &snapshot)))
}

fn string_field(boot: &Map<String, Value>, key: &str) -> Result<Option<String>, RedfishError> {
    match boot.get(key) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "Base.1.0.PropertyValueTypeError",
            format!("The value {other} for the property {key} is of a different type than the property can accept."),
        )),
    }
}

fn not_in_list(key: &str, value: &str, allowed: &[&str]) -> RedfishError {
    RedfishError::new(
        StatusCode::BAD_REQUEST,
        "Base.1.0.PropertyValueNotInList",
        format!(
            "The value {value:?} for the property {key} is not in the list of acceptable values ({}).",
            allowed.join(", ")
        ),
    )
}

async fn patch_system<M: Machine>(
    State(shared): AppState<M>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    check_system(&shared, &id)?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        RedfishError::new(
            StatusCode::BAD_REQUEST,
            "Base.1.0.MalformedJSON",
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(body) = body else {
        return Err(RedfishError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let mut boot = Map::new();
    for (key, value) in body {
        match (key.as_str(), value) {
            ("Boot", Value::Object(object)) => boot = object,
            (key, _) => {
                return Err(RedfishError::new(
                    StatusCode::BAD_REQUEST,
                    "Base.1.0.PropertyNotWritable",
                    format!("The property {key} cannot be changed on this system (only Boot can)."),
                ))
            }
        }
    }
    let mut inner = shared.inner.lock().await;
    if let Some(if_match) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let current = etag_of(&system_json(&shared, &inner.snapshot()));
        let matches = if_match
            .split(',')
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag == current);
        if !matches {
            return Err(RedfishError::new(
                StatusCode::PRECONDITION_FAILED,
                "Base.1.0.PreconditionFailed",
                format!("If-Match {if_match} does not match the current ETag {current}."),
            ));
        }
    }
    let mut wanted = inner.boot;
    for (key, _) in boot.iter() {
        if !matches!(
            key.as_str(),
            "BootSourceOverrideEnabled"
                | "BootSourceOverrideTarget"
                | "BootSourceOverrideMode"
                | "HttpBootUri"
        ) {
            return Err(RedfishError::new(
                StatusCode::BAD_REQUEST,
                "Base.1.0.PropertyUnknown",
                format!("The property Boot/{key} is not known to this system."),
            ));
        }
    }
    if let Some(value) = string_field(&boot, "BootSourceOverrideEnabled")? {
        wanted.enabled = OverrideEnabled::parse(&value).ok_or_else(|| {
            not_in_list("BootSourceOverrideEnabled", &value, &OverrideEnabled::ALL)
        })?;
    }
    if let Some(value) = string_field(&boot, "BootSourceOverrideTarget")? {
        wanted.target = OverrideTarget::parse(&value)
            .ok_or_else(|| not_in_list("BootSourceOverrideTarget", &value, &OverrideTarget::ALL))?;
        // Setting a target without saying for how long means "next boot".
        if !boot.contains_key("BootSourceOverrideEnabled")
            && wanted.enabled == OverrideEnabled::Disabled
            && wanted.target != OverrideTarget::None
        {
            wanted.enabled = OverrideEnabled::Once;
        }
    }
    if let Some(value) = string_field(&boot, "BootSourceOverrideMode")? {
        wanted.mode = BootMode::parse(&value)
            .ok_or_else(|| not_in_list("BootSourceOverrideMode", &value, &BootMode::ALL))?;
    }
    if let Some(uri) = boot.get("HttpBootUri") {
        if !uri.is_null() {
            return Err(RedfishError::new(
                StatusCode::BAD_REQUEST,
                "Base.1.0.PropertyValueNotInList",
                "HTTP boot (HttpBootUri) is not supported by this system.",
            ));
        }
    }
    tracing::info!(system = %id, ?wanted, "boot override set");
    inner.boot = wanted;
    Ok(no_content())
}

async fn reset<M: Machine>(
    State(shared): AppState<M>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    check_system(&shared, &id)?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        RedfishError::bad_request(format!("The request body is not valid JSON: {e}"))
    })?;
    let Some(reset_type) = body.get("ResetType").and_then(Value::as_str) else {
        return Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "Base.1.0.ActionParameterMissing",
            "The action ComputerSystem.Reset requires the parameter ResetType.",
        ));
    };
    let mut guard = shared.inner.lock().await;
    let inner = &mut *guard;
    let on = inner.power() == PowerState::On;
    tracing::info!(system = %id, reset_type, on, "reset");
    match reset_type {
        "On" | "ForceOn" => {
            if !on {
                let device = inner.take_boot_device();
                inner
                    .machine
                    .power_on(device)
                    .await
                    .map_err(RedfishError::machine)?;
            }
        }
        "ForceOff" => inner.machine.force_off().await,
        "GracefulShutdown" => {
            if on {
                inner
                    .machine
                    .acpi_powerdown()
                    .await
                    .map_err(RedfishError::machine)?;
            }
        }
        "ForceRestart" | "GracefulRestart" => {
            let device = inner.take_boot_device();
            if on && inner.machine.booted_from().as_ref() == Some(&device) {
                inner.machine.reset().await.map_err(RedfishError::machine)?;
            } else {
                // A different boot device needs a different QEMU command line.
                inner.machine.force_off().await;
                inner
                    .machine
                    .power_on(device)
                    .await
                    .map_err(RedfishError::machine)?;
            }
        }
        "PowerCycle" => {
            inner.machine.force_off().await;
            let device = inner.take_boot_device();
            inner
                .machine
                .power_on(device)
                .await
                .map_err(RedfishError::machine)?;
        }
        "Nmi" => inner.machine.nmi().await.map_err(RedfishError::machine)?,
        other => {
            return Err(RedfishError::new(
                StatusCode::BAD_REQUEST,
                "Base.1.0.ActionParameterValueNotInList",
                format!(
                    "The value {other:?} for ResetType is not one of {}.",
                    RESET_TYPES.join(", ")
                ),
            ))
        }
    }
    Ok(no_content())
}

async fn nics<M: Machine>(State(shared): AppState<M>, Path(id): Path<String>) -> Answer {
    check_system(&shared, &id)?;
    let base = format!("/redfish/v1/Systems/{id}/EthernetInterfaces");
    let members: Vec<String> = (0..shared.config.macs.len())
        .map(|i| format!("{base}/nic{i}"))
        .collect();
    Ok(resource(collection(
        "EthernetInterfaceCollection",
        &base,
        "Ethernet Interface Collection",
        &members,
    )))
}

async fn nic<M: Machine>(
    State(shared): AppState<M>,
    Path((id, nic)): Path<(String, String)>,
) -> Answer {
    check_system(&shared, &id)?;
    let path = format!("/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}");
    let mac = nic
        .strip_prefix("nic")
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| shared.config.macs.get(i))
        .ok_or_else(|| RedfishError::not_found(&path))?;
    Ok(resource(json!({
        "@odata.type": "#EthernetInterface.v1_4_0.EthernetInterface",
        "@odata.id": path,
        "Id": nic,
        "Name": format!("Virtio NIC {nic}"),
        "MACAddress": mac,
        "PermanentMACAddress": mac,
        "SpeedMbps": 1000,
        "Status": { "State": "Enabled", "Health": "OK" },
    })))
}

async fn processors<M: Machine>(State(shared): AppState<M>, Path(id): Path<String>) -> Answer {
    check_system(&shared, &id)?;
    let base = format!("/redfish/v1/Systems/{id}/Processors");
    Ok(resource(collection(
        "ProcessorCollection",
        &base,
        "Processors Collection",
        &[format!("{base}/CPU0")],
    )))
}

async fn processor<M: Machine>(
    State(shared): AppState<M>,
    Path((id, cpu)): Path<(String, String)>,
) -> Answer {
    check_system(&shared, &id)?;
    let path = format!("/redfish/v1/Systems/{id}/Processors/{cpu}");
    if cpu != "CPU0" {
        return Err(RedfishError::not_found(&path));
    }
    Ok(resource(json!({
        "@odata.type": "#Processor.v1_0_0.Processor",
        "@odata.id": path,
        "Id": cpu,
        "Name": "Processor",
        "Socket": "CPU 0",
        "ProcessorType": "CPU",
        "ProcessorArchitecture": "x86",
        "InstructionSet": "x86-64",
        "Manufacturer": "QEMU",
        "Model": "QEMU TCG CPU",
        "TotalCores": shared.config.cpus,
        "TotalThreads": shared.config.cpus,
        "Status": { "State": "Enabled", "Health": "OK" },
    })))
}

async fn simple_storages<M: Machine>(State(shared): AppState<M>, Path(id): Path<String>) -> Answer {
    check_system(&shared, &id)?;
    let base = format!("/redfish/v1/Systems/{id}/SimpleStorage");
    Ok(resource(collection(
        "SimpleStorageCollection",
        &base,
        "Simple Storage Collection",
        &[format!("{base}/virtio")],
    )))
}

async fn simple_storage<M: Machine>(
    State(shared): AppState<M>,
    Path((id, storage)): Path<(String, String)>,
) -> Answer {
    check_system(&shared, &id)?;
    let path = format!("/redfish/v1/Systems/{id}/SimpleStorage/{storage}");
    if storage != "virtio" {
        return Err(RedfishError::not_found(&path));
    }
    let devices: Vec<Value> = if shared.config.disk_bytes > 0 {
        vec![json!({
            "Name": "vda",
            "Manufacturer": "QEMU",
            "Model": "virtio-blk",
            "CapacityBytes": shared.config.disk_bytes,
            "Status": { "State": "Enabled", "Health": "OK" },
        })]
    } else {
        Vec::new()
    };
    Ok(resource(json!({
        "@odata.type": "#SimpleStorage.v1_2_0.SimpleStorage",
        "@odata.id": path,
        "Id": storage,
        "Name": "Virtio block controller",
        "Devices": devices,
        "Status": { "State": "Enabled", "Health": "OK" },
    })))
}

async fn managers<M: Machine>(State(_shared): AppState<M>) -> Response {
    resource(collection(
        "ManagerCollection",
        "/redfish/v1/Managers",
        "Manager Collection",
        &[format!("/redfish/v1/Managers/{MANAGER_ID}")],
    ))
}

async fn manager<M: Machine>(State(shared): AppState<M>, Path(id): Path<String>) -> Answer {
    let path = format!("/redfish/v1/Managers/{id}");
    if id != MANAGER_ID {
        return Err(RedfishError::not_found(&path));
    }
    Ok(resource(json!({
        "@odata.type": "#Manager.v1_3_1.Manager",
        "@odata.id": path,
        "Id": id,
        "Name": "Ironclad lab BMC",
        "ManagerType": "BMC",
        "Model": "Ironclad virtual BMC",
        "FirmwareVersion": env!("CARGO_PKG_VERSION"),
        "Status": { "State": "Enabled", "Health": "OK" },
        "VirtualMedia": odata(&format!("{path}/VirtualMedia")),
        "Links": {
            "ManagerForServers": [odata(&format!("/redfish/v1/Systems/{}", shared.config.system_id))],
            "ManagerForChassis": [odata(&format!("/redfish/v1/Chassis/{CHASSIS_ID}"))],
        },
    })))
}

/// Where a virtual media resource was asked for: under the system or the manager.
fn media_base<M>(shared: &Shared<M>, under_system: bool, id: &str) -> Result<String, RedfishError> {
    if under_system {
        check_system(shared, id)?;
        Ok(format!("/redfish/v1/Systems/{id}/VirtualMedia"))
    } else if id == MANAGER_ID {
        Ok(format!("/redfish/v1/Managers/{id}/VirtualMedia"))
    } else {
        Err(RedfishError::not_found(&format!(
            "/redfish/v1/Managers/{id}"
        )))
    }
}

fn media_collection<M>(shared: &Shared<M>, under_system: bool, id: &str) -> Answer {
    let base = media_base(shared, under_system, id)?;
    Ok(resource(collection(
        "VirtualMediaCollection",
        &base,
        "Virtual Media Services",
        &[format!("{base}/{MEDIA_ID}")],
    )))
}

async fn media<M: Machine>(shared: &Shared<M>, under_system: bool, id: &str, dev: &str) -> Answer {
    let base = media_base(shared, under_system, id)?;
    let path = format!("{base}/{dev}");
    if dev != MEDIA_ID {
        return Err(RedfishError::not_found(&path));
    }
    let media = shared.inner.lock().await.media.clone();
    let image_name = media
        .image
        .as_deref()
        .and_then(|image| image.rsplit('/').next())
        .unwrap_or_default()
        .to_owned();
    Ok(resource(json!({
        "@odata.type": "#VirtualMedia.v1_4_0.VirtualMedia",
        "@odata.id": path,
        "Id": dev,
        "Name": "Virtual CD",
        "MediaTypes": ["CD", "DVD"],
        "Image": media.image.unwrap_or_default(),
        "ImageName": image_name,
        "ConnectedVia": if media.inserted { "URI" } else { "NotConnected" },
        "Inserted": media.inserted,
        "WriteProtected": media.write_protected || !media.inserted,
        "TransferProtocolType@Redfish.AllowableValues": ["HTTP", "HTTPS", "FILE"],
        "Actions": {
            "#VirtualMedia.InsertMedia": { "target": format!("{path}/Actions/VirtualMedia.InsertMedia") },
            "#VirtualMedia.EjectMedia": { "target": format!("{path}/Actions/VirtualMedia.EjectMedia") },
        },
    })))
}

async fn remove_download(media: &MediaState) {
    if media.downloaded {
        if let Some(local) = &media.local {
            let _ = tokio::fs::remove_file(local).await;
        }
    }
}

/// Fetches `image` (http, https or file URL) to a path QEMU can open.
async fn fetch_image<M>(
    shared: &Shared<M>,
    image: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(PathBuf, bool), RedfishError> {
    let url = url::Url::parse(image)
        .map_err(|e| RedfishError::bad_request(format!("The Image {image:?} is not a URL: {e}")))?;
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| RedfishError::bad_request(format!("{image} is not a local path")))?;
            if !path.is_file() {
                return Err(RedfishError::bad_request(format!(
                    "Cannot insert virtual media: {} does not exist",
                    path.display()
                )));
            }
            Ok((path, false))
        }
        "http" | "https" => {
            let target = shared
                .config
                .state_dir
                .join(format!("{}-{MEDIA_ID}.iso", shared.config.system_id));
            let partial = target.with_extension("iso.part");
            let download_error = |what: String| {
                RedfishError::bad_request(format!("Cannot download virtual media {image}: {what}"))
            };
            let mut request = shared.http.get(url.clone());
            if let Some(user) = user {
                request = request.basic_auth(user, password);
            }
            let response = request
                .send()
                .await
                .map_err(|e| download_error(e.to_string()))?;
            if !response.status().is_success() {
                return Err(download_error(format!(
                    "got error {} from the server",
                    response.status().as_u16()
                )));
            }
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| download_error(format!("{}: {e}", partial.display())))?;
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| download_error(e.to_string()))?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| download_error(format!("{}: {e}", partial.display())))?;
            }
            file.flush()
                .await
                .map_err(|e| download_error(format!("{}: {e}", partial.display())))?;
            tokio::fs::rename(&partial, &target)
                .await
                .map_err(|e| download_error(format!("{}: {e}", target.display())))?;
            Ok((target, true))
        }
        other => Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "Base.1.0.ActionParameterNotSupported",
            format!(
                "TransferProtocolType {other} is not supported (HTTP, HTTPS and file URLs are)."
            ),
        )),
    }
}

async fn insert<M: Machine>(
    shared: &Shared<M>,
    under_system: bool,
    id: &str,
    dev: &str,
    body: &[u8],
) -> Answer {
    let base = media_base(shared, under_system, id)?;
    if dev != MEDIA_ID {
        return Err(RedfishError::not_found(&format!("{base}/{dev}")));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        RedfishError::bad_request(format!("The request body is not valid JSON: {e}"))
    })?;
    let Some(image) = body.get("Image").and_then(Value::as_str) else {
        return Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "Base.1.0.ActionParameterMissing",
            "The action VirtualMedia.InsertMedia requires the parameter Image.",
        ));
    };
    let inserted = body
        .get("Inserted")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let write_protected = body
        .get("WriteProtected")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let user = body.get("UserName").and_then(Value::as_str);
    let password = body.get("Password").and_then(Value::as_str);
    tracing::info!(system = %shared.config.system_id, image, "inserting virtual media");
    let (local, downloaded) = fetch_image(shared, image, user, password).await?;
    let mut inner = shared.inner.lock().await;
    let old = std::mem::replace(
        &mut inner.media,
        MediaState {
            image: Some(image.to_owned()),
            local: Some(local.clone()),
            inserted,
            write_protected,
            downloaded,
        },
    );
    if old.local.as_ref() != Some(&local) {
        remove_download(&old).await;
    }
    Ok(no_content())
}

async fn eject<M: Machine>(shared: &Shared<M>, under_system: bool, id: &str, dev: &str) -> Answer {
    let base = media_base(shared, under_system, id)?;
    if dev != MEDIA_ID {
        return Err(RedfishError::not_found(&format!("{base}/{dev}")));
    }
    let mut inner = shared.inner.lock().await;
    let old = std::mem::take(&mut inner.media);
    remove_download(&old).await;
    tracing::info!(system = %shared.config.system_id, "virtual media ejected");
    Ok(no_content())
}

async fn system_media_collection<M: Machine>(
    State(shared): AppState<M>,
    Path(id): Path<String>,
) -> Answer {
    media_collection(&shared, true, &id)
}

async fn manager_media_collection<M: Machine>(
    State(shared): AppState<M>,
    Path(id): Path<String>,
) -> Answer {
    media_collection(&shared, false, &id)
}

async fn system_media<M: Machine>(
    State(shared): AppState<M>,
    Path((id, dev)): Path<(String, String)>,
) -> Answer {
    media(&shared, true, &id, &dev).await
}

async fn manager_media<M: Machine>(
    State(shared): AppState<M>,
    Path((id, dev)): Path<(String, String)>,
) -> Answer {
    media(&shared, false, &id, &dev).await
}

async fn system_insert<M: Machine>(
    State(shared): AppState<M>,
    Path((id, dev)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Answer {
    insert(&shared, true, &id, &dev, &body).await
}

async fn manager_insert<M: Machine>(
    State(shared): AppState<M>,
    Path((id, dev)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Answer {
    insert(&shared, false, &id, &dev, &body).await
}

async fn system_eject<M: Machine>(
    State(shared): AppState<M>,
    Path((id, dev)): Path<(String, String)>,
) -> Answer {
    eject(&shared, true, &id, &dev).await
}

async fn manager_eject<M: Machine>(
    State(shared): AppState<M>,
    Path((id, dev)): Path<(String, String)>,
) -> Answer {
    eject(&shared, false, &id, &dev).await
}

async fn chassis_collection<M: Machine>(State(_shared): AppState<M>) -> Response {
    resource(collection(
        "ChassisCollection",
        "/redfish/v1/Chassis",
        "Chassis Collection",
        &[format!("/redfish/v1/Chassis/{CHASSIS_ID}")],
    ))
}

async fn chassis<M: Machine>(State(shared): AppState<M>, Path(id): Path<String>) -> Answer {
    let path = format!("/redfish/v1/Chassis/{id}");
    if id != CHASSIS_ID {
        return Err(RedfishError::not_found(&path));
    }
    let snapshot = shared.inner.lock().await.snapshot();
    Ok(resource(json!({
        "@odata.type": "#Chassis.v1_5_0.Chassis",
        "@odata.id": path,
        "Id": id,
        "Name": "Ironclad lab chassis",
        "ChassisType": "RackMount",
        "Manufacturer": "QEMU",
        "PowerState": snapshot.power.as_str(),
        "Status": { "State": "Enabled", "Health": "OK" },
        "Links": {
            "ComputerSystems": [odata(&format!("/redfish/v1/Systems/{}", shared.config.system_id))],
            "ManagedBy": [odata(&format!("/redfish/v1/Managers/{MANAGER_ID}"))],
        },
    })))
}

/// `POST /ironclad-lab/fail-next?count=N`: answer 500 to the next N requests.
async fn fail_next<M: Machine>(
    State(shared): AppState<M>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Answer {
    let count = match query.get("count") {
        None => 1,
        Some(count) => count
            .parse::<u32>()
            .map_err(|e| RedfishError::bad_request(format!("count={count:?}: {e}")))?,
    };
    shared.fail_next.store(count, Ordering::SeqCst);
    tracing::info!(system = %shared.config.system_id, count, "fault injection armed");
    Ok(Json(json!({ "fail_next": count })).into_response())
}

/// `GET /ironclad-lab/state`: the BMC's view, for people and tests.
async fn lab_state<M: Machine>(State(shared): AppState<M>) -> Response {
    let snapshot = shared.inner.lock().await.snapshot();
    let body = json!({
        "system_id": shared.config.system_id,
        "power_state": snapshot.power.as_str(),
        "boot": {
            "enabled": snapshot.boot.enabled.as_str(),
            "target": snapshot.boot.target.as_str(),
            "mode": snapshot.boot.mode.as_str(),
        },
        "booted_from": snapshot.booted_from.map(|d| format!("{d:?}")),
        "pid": snapshot.pid,
        "virtual_media": {
            "image": snapshot.media.image,
            "inserted": snapshot.media.inserted,
        },
        "fail_next": shared.fail_next.load(Ordering::SeqCst),
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
