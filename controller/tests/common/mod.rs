//! Test harness: runs the real `ironclad-controller` binary on a free port with a
//! temporary SQLite file, and talks to it over HTTP.

#![allow(dead_code)]

pub mod sushy;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A running controller process, killed by PID when dropped.
pub struct Controller {
    child: Child,
    pub url: String,
    pub port: u16,
    pub database: PathBuf,
    extra: Vec<String>,
    http: reqwest::Client,
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn spawn(port: u16, database: &Path, extra: &[String]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ironclad-controller"));
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!("sqlite://{}", database.display()))
        .arg("--log-level")
        .arg("warn")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = command.spawn().expect("start ironclad-controller");
    let started = Instant::now();
    // Readiness: the port accepts connections.
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "controller did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Controller {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let database = dir.join("ironclad.sqlite");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn(port, &database, &extra);
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            database,
            extra,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the process with SIGTERM and starts it again on the same database and port.
    pub fn restart(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait for the controller");
        assert!(exit.success(), "controller exited with {exit} on SIGTERM");
        self.child = spawn(self.port, &self.database, &self.extra);
        // Pooled keep-alive connections went to the old process.
        self.http = reqwest::Client::new();
    }

    /// Stops the process with SIGTERM (a clean shutdown) and waits for it.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        version: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(version) = version {
            request = request.header("X-OpenStack-Ironic-API-Version", version);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to the controller");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, Some("latest"), None).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(Method::POST, path, Some("latest"), Some(body))
            .await;
        (s, v)
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(Method::PUT, path, Some("latest"), Some(body))
            .await;
        (s, v)
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(Method::PATCH, path, Some("latest"), Some(body))
            .await;
        (s, v)
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::DELETE, path, Some("latest"), None).await;
        (s, v)
    }

    /// Creates a node and returns its UUID.
    pub async fn create_node(&self, body: Value) -> String {
        let (status, node) = self.post("/v1/nodes", body).await;
        assert_eq!(status, StatusCode::CREATED, "{node}");
        node["uuid"].as_str().expect("uuid").to_owned()
    }

    /// Asks for a provision target and checks the 202.
    pub async fn provision(&self, node: &str, target: &str) {
        let (status, body) = self
            .put(
                &format!("/v1/nodes/{node}/states/provision"),
                serde_json::json!({"target": target}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{target}: {body}");
    }

    /// Polls the node until it is in `state` with no lock held (readiness check, not a fixed sleep).
    pub async fn wait_state(&self, node: &str, state: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, shown) = self.get(&format!("/v1/nodes/{node}")).await;
            if shown["provision_state"] == state && shown["reservation"].is_null() {
                return shown;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "node {node} never reached {state}; last seen: {shown}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until the node's lock is free.
    pub async fn wait_unlocked(&self, node: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, shown) = self.get(&format!("/v1/nodes/{node}")).await;
            if shown["reservation"].is_null() {
                return shown;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "node {node} stays locked"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The error message inside an Ironic error body.
    pub fn fault(body: &Value) -> String {
        let inner = body["error_message"]
            .as_str()
            .expect("error_message is a string");
        let fault: Value = serde_json::from_str(inner).expect("error_message is JSON");
        assert!(fault.get("faultcode").is_some());
        assert!(fault.get("debuginfo").is_some());
        fault["faultstring"]
            .as_str()
            .expect("faultstring")
            .to_owned()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
