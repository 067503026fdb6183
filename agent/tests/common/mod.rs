//! Shared harness of the agent's integration tests: the real `ironclad-agent`
//! binary in host mode, a tiny in-test HTTP server that STANDS IN for the
//! controller's lookup/heartbeat endpoints (the real controller is tested end to
//! end in tests/), and a local image server.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ironclad_versioning::controller_api::ControllerRoot;
use ironclad_versioning::ramdisk::HeartbeatRequest;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::{Notify, Semaphore};

pub const NODE_UUID: &str = "0b5e3b3e-1f0c-4a43-9c1e-2f1b1f3c5e01";
pub const MAC: &str = "52:54:00:12:34:56";
pub const TOKEN: &str = "tok_0123456789abcdefghijklmnopqrstuvwxyzABCD";
pub const WAIT: Duration = Duration::from_secs(30);

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// One heartbeat as received.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub node: String,
    pub version_header: Option<String>,
    pub body: HeartbeatRequest,
}

#[derive(Default)]
struct ControllerState {
    lookup_token: Option<String>,
    root_device: Option<Value>,
    lookups: Mutex<Vec<(String, Option<String>)>>,
    heartbeats: Mutex<Vec<Heartbeat>>,
    heartbeat_seen: Notify,
}

/// Stands in for the controller's ramdisk endpoints (GET /, lookup, heartbeat).
pub struct FakeController {
    pub url: String,
    state: Arc<ControllerState>,
}

async fn root(State((_, url)): State<(Arc<ControllerState>, String)>) -> Json<ControllerRoot> {
    Json(ControllerRoot::new(&url))
}

async fn lookup(
    State((state, _)): State<(Arc<ControllerState>, String)>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let version = headers
        .get("X-OpenStack-Ironic-API-Version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let q = q.unwrap_or_default();
    state.lookups.lock().unwrap().push((q.clone(), version));
    if !q.contains(&MAC.replace(':', "%3A")) && !q.contains(MAC) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error_message": "{\"faultstring\": \"Node not found\"}"})),
        )
            .into_response();
    }
    let mut properties = serde_json::Map::new();
    if let Some(rd) = &state.root_device {
        properties.insert("root_device".into(), rd.clone());
    }
    Json(json!({
        "node": {"uuid": NODE_UUID, "properties": properties, "instance_info": {}, "driver_internal_info": {}},
        "config": {"heartbeat_timeout": 300, "agent_token": state.lookup_token, "agent_md5_checksum_enable": true, "tls_min_version": "1.3"}
    }))
    .into_response()
}

async fn heartbeat(
    State((state, _)): State<(Arc<ControllerState>, String)>,
    axum::extract::Path(node): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<HeartbeatRequest>,
) -> StatusCode {
    let version_header = headers
        .get("X-OpenStack-Ironic-API-Version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.heartbeats.lock().unwrap().push(Heartbeat {
        node,
        version_header,
        body,
    });
    state.heartbeat_seen.notify_waiters();
    StatusCode::ACCEPTED
}

impl FakeController {
    pub async fn start(lookup_token: Option<&str>, root_device: Option<Value>) -> Self {
        let state = Arc::new(ControllerState {
            lookup_token: lookup_token.map(str::to_owned),
            root_device,
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new()
            .route("/", get(root))
            .route("/v1/lookup", get(lookup))
            .route("/v1/heartbeat/{node}", post(heartbeat))
            .with_state((state.clone(), url.clone()));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    pub fn heartbeats(&self) -> Vec<Heartbeat> {
        self.state.heartbeats.lock().unwrap().clone()
    }

    pub fn lookups(&self) -> Vec<(String, Option<String>)> {
        self.state.lookups.lock().unwrap().clone()
    }

    /// Waits until at least `n` heartbeats arrived (the agent's readiness signal).
    pub async fn wait_heartbeats(&self, n: usize, agent: &mut Agent) -> Vec<Heartbeat> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = self.state.heartbeat_seen.notified();
            let hbs = self.heartbeats();
            if hbs.len() >= n {
                return hbs;
            }
            agent.assert_running();
            if tokio::time::timeout_at(deadline, seen).await.is_err() {
                panic!("no heartbeat within {WAIT:?}; agent log:\n{}", agent.log());
            }
        }
    }
}

/// The image server: serves files from memory; `/slow/<name>` holds back the
/// last chunk until [`ImageServer::release`].
pub struct ImageServer {
    pub url: String,
    gate: Arc<Semaphore>,
}

#[derive(Clone)]
struct ImageState {
    files: Arc<Vec<(String, Vec<u8>)>>,
    gate: Arc<Semaphore>,
}

async fn image_file(
    State(state): State<ImageState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match state.files.iter().find(|(n, _)| *n == name) {
        Some((_, data)) => data.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn slow_file(
    State(state): State<ImageState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let Some((_, data)) = state.files.iter().find(|(n, _)| *n == name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let gate = state.gate.clone();
    let len = data.len();
    let split = len - 1024;
    let stream = async_stream(data, split, gate);
    Response::builder()
        .header("content-length", len.to_string())
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    data: Vec<u8>,
    split: usize,
    gate: Arc<Semaphore>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let data = bytes::Bytes::from(data);
    futures_util::stream::unfold(0u8, move |step| {
        let data = data.clone();
        let gate = gate.clone();
        async move {
            match step {
                0 => Some((Ok(data.slice(..split)), 1)),
                1 => {
                    let _permit = gate.acquire().await.ok()?;
                    Some((Ok(data.slice(split..)), 2))
                }
                _ => None,
            }
        }
    })
}

impl ImageServer {
    pub async fn start(files: Vec<(String, Vec<u8>)>) -> Self {
        let gate = Arc::new(Semaphore::new(0));
        let state = ImageState {
            files: Arc::new(files),
            gate: gate.clone(),
        };
        let router = Router::new()
            .route("/images/{name}", get(image_file))
            .route("/slow/{name}", get(slow_file))
            .with_state(state);
        let addr = serve(router).await;
        Self {
            url: format!("http://{addr}"),
            gate,
        }
    }

    pub fn release(&self) {
        self.gate.add_permits(1000);
    }
}

/// The agent process; killed (by its PID) on drop.
pub struct Agent {
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn spawn(controller: &str, disk: &Path, listen: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ironclad-agent"))
            .args(["--api-url", controller, "--listen", listen])
            .args([
                "--advertise-host",
                "127.0.0.1",
                "--mac",
                MAC,
                "--lookup-interval",
                "0.1",
            ])
            .arg("--disk")
            .arg(disk)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            log_path,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("agent exited with {status}; log:\n{}", self.log());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sparse file disk of `size` bytes filled with nothing (reads as zeros).
pub fn sparse_disk(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

/// A deterministic test image with MBR signature 0x12345678 at offset 440.
pub fn test_image(len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len)
        .map(|i| ((i * 7 + i / 4096) % 251) as u8 + 1)
        .collect();
    data[440..444].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
    data
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The agent API client, token included.
pub struct AgentApi {
    pub base: String,
    pub http: reqwest::Client,
}

impl AgentApi {
    pub fn new(base: &str, pem: Option<&str>) -> Self {
        let mut b = reqwest::Client::builder().use_rustls_tls();
        if let Some(pem) = pem {
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: b.build().unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST /v1/commands/ with the right token.
    pub async fn command(&self, name: &str, params: Value, wait: bool) -> (u16, Value) {
        let body = json!({"name": name, "params": params}).to_string();
        self.post_raw(
            &format!("/v1/commands/?wait={wait}&agent_token={TOKEN}"),
            &body,
        )
        .await
    }
}
