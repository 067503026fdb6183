//! Heartbeat validation and the heartbeat-driven deploy, against the real controller binary.
//!
//! The agent here is a STAND-IN: a small in-test axum server answering
//! `/v1/commands/` the way the agent does (IPA's command result shapes), so that
//! the controller's deploy logic can be tested at the crate level. The real
//! end-to-end deploy with the real agent lives in the workspace `tests/` crate.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use common::Controller;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Default)]
struct AgentState {
    /// Names of the commands received, in order.
    received: Vec<String>,
    /// Params of each command received.
    params: Vec<Value>,
    /// Token seen on each request.
    tokens: Vec<Option<String>>,
    /// Status reported for execute_deploy_step in the command list.
    write_status: String,
    /// The agent's command history, as `GET /v1/commands/` shows it.
    history: Vec<Value>,
}

type Shared = Arc<Mutex<AgentState>>;

fn result(name: &str, status: &str, result: Value, error: Value) -> Value {
    json!({"id": uuid::Uuid::new_v4().to_string(), "command_name": name,
           "command_status": status, "command_error": error, "command_result": result})
}

async fn post_command(
    State(state): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = state.lock().unwrap();
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    s.received.push(name.clone());
    s.params.push(body["params"].clone());
    s.tokens.push(query.get("agent_token").cloned());
    let reply = match name.as_str() {
        "deploy.get_deploy_steps" => result(
            "get_deploy_steps",
            "SUCCEEDED",
            json!({"deploy_steps": {"GenericHardwareManager": [
                {"step": "write_image", "priority": 80, "interface": "deploy", "reboot_requested": false}]},
                   "hardware_manager_version": {"generic_hardware_manager": "1.2"}}),
            Value::Null,
        ),
        "deploy.execute_deploy_step" => {
            result("execute_deploy_step", "RUNNING", Value::Null, Value::Null)
        }
        "standby.get_partition_uuids" => result(
            "get_partition_uuids",
            "SUCCEEDED",
            json!({"root uuid": "0x1234abcd"}),
            Value::Null,
        ),
        "log.collect_system_logs" => result(
            "collect_system_logs",
            "SUCCEEDED",
            json!({"system_logs": "bG9ncw=="}),
            Value::Null,
        ),
        other => result(
            other.rsplit('.').next().unwrap_or(other),
            "SUCCEEDED",
            Value::Null,
            Value::Null,
        ),
    };
    s.history.push(reply.clone());
    Json(reply)
}

async fn list_commands(
    State(state): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let mut s = state.lock().unwrap();
    s.tokens.push(query.get("agent_token").cloned());
    let status = s.write_status.clone();
    let commands: Vec<Value> = s
        .history
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c["command_name"] == "execute_deploy_step" {
                c["command_status"] = json!(status);
                if status == "RUNNING" {
                    // What Ironclad's agent reports while writing (IPA reports null).
                    c["command_result"] = json!({"progress": {
                        "stage": "downloading", "bytes_received": 4096, "bytes_written": 2048,
                        "bytes_total": 8192, "rate_bytes_per_s": 1024, "eta_s": 4}});
                }
                if status == "FAILED" {
                    c["command_error"] = json!({"type": "ImageChecksumError", "code": 500,
                        "message": "Error verifying image checksum",
                        "details": "checksum mismatch: expected ab, got cd"});
                }
            }
            c
        })
        .collect();
    Json(json!({"commands": commands}))
}

/// Starts the stand-in agent on a free port; returns its URL and state.
async fn stand_in_agent() -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(AgentState {
        write_status: "RUNNING".to_owned(),
        ..AgentState::default()
    }));
    let app = Router::new()
        .route("/v1/commands/", get(list_commands).post(post_command))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, state)
}

async fn wait_for_command(agent: &Shared, name: &str) {
    let started = Instant::now();
    while !agent.lock().unwrap().received.iter().any(|n| n == name) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "agent never got {name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Enrolls a node with a port and brings it to `wait call-back`; returns (uuid, token).
async fn node_waiting_for_agent(c: &Controller, name: &str, mac: &str) -> (String, String) {
    let node = c
        .create_node(
            json!({"driver": "fake-hardware", "name": name, "instance_info": {
            "image_source": "http://images/disk.raw",
            "image_os_hash_algo": "sha256", "image_os_hash_value": "ab"}}),
        )
        .await;
    c.post("/v1/ports", json!({"node_uuid": node, "address": mac}))
        .await;
    c.provision(&node, "manage").await;
    c.wait_state(&node, "manageable").await;
    c.provision(&node, "provide").await;
    c.wait_state(&node, "available").await;
    c.provision(&node, "active").await;
    c.wait_state(&node, "wait call-back").await;
    let (status, _, lookup) = c
        .call(
            Method::GET,
            &format!("/v1/lookup?addresses={mac}"),
            Some("1.62"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lookup}");
    let token = lookup["config"]["agent_token"].as_str().unwrap().to_owned();
    (node, token)
}

async fn heartbeat(c: &Controller, node: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, reply) = c
        .call(
            Method::POST,
            &format!("/v1/heartbeat/{node}"),
            Some("1.68"),
            Some(body),
        )
        .await;
    (status, reply)
}

#[tokio::test]
async fn heartbeats_drive_a_deploy_to_active() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &["--allow-insecure-agent"]);
    let (agent_url, agent) = stand_in_agent().await;
    let (node, token) = node_waiting_for_agent(&c, "deploy-me", "52:54:00:00:00:01").await;
    let beat = json!({"callback_url": agent_url, "agent_token": token, "agent_version": "0.1.0"});

    let (status, body) = heartbeat(&c, &node, beat.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body.is_null(), "202 has an empty body");
    wait_for_command(&agent, "deploy.execute_deploy_step").await;
    let shown = c.wait_unlocked(&node).await;
    assert_eq!(shown["provision_state"], "wait call-back");
    assert_eq!(shown["deploy_step"]["step"], "write_image");
    assert_eq!(
        shown["driver_internal_info"]["agent_url"],
        agent_url.as_str()
    );
    {
        let s = agent.lock().unwrap();
        assert_eq!(
            s.received[..2],
            ["deploy.get_deploy_steps", "deploy.execute_deploy_step"]
        );
        assert!(s
            .tokens
            .iter()
            .all(|t| t.as_deref() == Some(token.as_str())));
        let step = &s.params[1]["step"];
        assert_eq!(step["step"], "write_image");
        assert_eq!(step["priority"], 80);
        let info = &step["args"]["image_info"];
        assert_eq!(info["urls"][0], "http://images/disk.raw");
        assert_eq!(info["os_hash_algo"], "sha256");
        assert_eq!(info["disk_format"], "raw");
        assert_eq!(info["image_type"], "whole-disk-image");
        assert_eq!(info["node_uuid"], node.as_str());
        assert_eq!(
            s.params[1]["deploy_version"]["generic_hardware_manager"],
            "1.2"
        );
        assert_eq!(
            s.params[1]["node"]["driver_internal_info"]["agent_secret_token"],
            "******"
        );
    }

    // Still running: nothing changes.
    let (status, _) = heartbeat(&c, &node, beat.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    c.wait_unlocked(&node).await;
    let (_, shown) = c.get(&format!("/v1/nodes/{node}")).await;
    assert_eq!(shown["provision_state"], "wait call-back");
    let progress = &shown["driver_internal_info"]["deploy_progress"];
    assert_eq!(
        progress["bytes_written"], 2048,
        "progress is shown: {progress}"
    );
    assert_eq!(progress["stage"], "downloading");

    // A different callback URL in the same boot is refused.
    let (status, body) = heartbeat(
        &c,
        &node,
        json!({"callback_url": "http://127.0.0.1:1", "agent_token": token, "agent_version": "0.1.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("Detected change in ramdisk provided callback_url"));

    agent.lock().unwrap().write_status = "SUCCEEDED".to_owned();
    let (status, _) = heartbeat(&c, &node, beat).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let shown = c.wait_state(&node, "active").await;
    assert!(shown["target_provision_state"].is_null());
    assert!(shown["deploy_step"].as_object().unwrap().is_empty());
    assert_eq!(shown["power_state"], "power on");
    assert!(shown["last_error"].is_null());
    let dii = &shown["driver_internal_info"];
    assert!(dii.get("agent_url").is_none() && dii.get("agent_secret_token").is_none());
    assert!(
        dii.get("deploy_progress").is_none(),
        "progress ends with the deploy"
    );
    assert_eq!(dii["root_uuid_or_disk_id"], "0x1234abcd");
    let received = agent.lock().unwrap().received.clone();
    for name in [
        "standby.get_partition_uuids",
        "standby.sync",
        "standby.power_off",
    ] {
        assert!(
            received.iter().any(|n| n == name),
            "{name} missing from {received:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_write_image_fails_the_deploy_with_the_agents_details() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &["--allow-insecure-agent"]);
    let (agent_url, agent) = stand_in_agent().await;
    let (node, token) = node_waiting_for_agent(&c, "fail-me", "52:54:00:00:00:02").await;
    let beat = json!({"callback_url": agent_url, "agent_token": token, "agent_version": "0.1.0"});
    heartbeat(&c, &node, beat.clone()).await;
    wait_for_command(&agent, "deploy.execute_deploy_step").await;
    c.wait_unlocked(&node).await;
    agent.lock().unwrap().write_status = "FAILED".to_owned();
    let (status, _) = heartbeat(&c, &node, beat).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let shown = c.wait_state(&node, "deploy failed").await;
    let last_error = shown["last_error"].as_str().unwrap();
    assert!(
        last_error.starts_with("Deploy step deploy.write_image failed: checksum mismatch"),
        "{last_error}"
    );
    assert!(last_error.contains("deploy-logs"), "{last_error}");
    assert!(agent
        .lock()
        .unwrap()
        .received
        .iter()
        .any(|n| n == "log.collect_system_logs"));
    assert_eq!(shown["power_state"], "power off");
    assert!(shown["driver_internal_info"]
        .get("agent_secret_token")
        .is_none());
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("deploy-logs"))
        .unwrap()
        .collect();
    assert_eq!(logs.len(), 1);
}

#[tokio::test]
async fn heartbeats_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &["--allow-insecure-agent"]);
    let (node, token) = node_waiting_for_agent(&c, "hb", "52:54:00:00:00:03").await;
    let url = "http://127.0.0.1:9";

    let (status, body) = heartbeat(
        &c,
        &node,
        json!({"callback_url": url, "agent_token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("Agent did not transmit a version"));
    let (status, body) = heartbeat(
        &c,
        &node,
        json!({"callback_url": url, "agent_version": "1"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        Controller::fault(&body),
        "Invalid or missing agent token received."
    );
    let (status, _) = heartbeat(
        &c,
        &node,
        json!({"callback_url": url, "agent_version": "1", "agent_token": "wrong"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = heartbeat(
        &c,
        "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
        json!({"callback_url": url, "agent_version": "1", "agent_token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = c
        .call(
            Method::POST,
            &format!("/v1/heartbeat/{node}"),
            Some("1.36"),
            Some(json!({"callback_url": url, "agent_version": "1", "agent_token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "agent_token needs 1.62");
    assert!(Controller::fault(&body).contains("agent_token"));

    // Without --allow-insecure-agent, http callbacks are refused.
    let strict_dir = tempfile::tempdir().unwrap();
    let strict = Controller::start(strict_dir.path(), &[]);
    let (node, token) = node_waiting_for_agent(&strict, "tls", "52:54:00:00:00:04").await;
    let (status, body) = heartbeat(
        &strict,
        &node,
        json!({"callback_url": "http://10.0.0.5:9999", "agent_version": "1", "agent_token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("TLS is required by configuration"));
}

#[tokio::test]
async fn a_silent_agent_times_the_deploy_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &["--deploy-callback-timeout", "1"]);
    let (node, _) = node_waiting_for_agent(&c, "silent", "52:54:00:00:00:05").await;
    let shown = c.wait_state(&node, "deploy failed").await;
    let last_error = shown["last_error"].as_str().unwrap();
    assert!(
        last_error.starts_with("Timeout reached while waiting for callback"),
        "{last_error}"
    );
    // A failed deploy can be retried.
    c.provision(&node, "active").await;
    c.wait_state(&node, "wait call-back").await;
}
