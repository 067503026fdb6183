//! Golden fixtures: every wire message parses into its type and writes back
//! unchanged. A failing test here means the wire contract changed.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::path::{Path, PathBuf};

use ironclad_versioning::{agent_api, controller_api, image_info, inventory, ramdisk, steps};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn round_trip<T: DeserializeOwned + Serialize>(name: &str) {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let original: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{name} no longer parses into its type: {e}"));
    let written = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        written, original,
        "{name}: the type writes a different message than the golden fixture"
    );
}

macro_rules! fixtures {
    ($($file:literal => $ty:ty),+ $(,)?) => {
        const COVERED: &[&str] = &[$($file),+];

        #[test]
        fn every_fixture_round_trips() {
            $(round_trip::<$ty>($file);)+
        }
    };
}

fixtures! {
    "command_request.json" => agent_api::CommandRequest,
    "command_result_running.json" => agent_api::CommandResult,
    "command_result_running_progress.json" => agent_api::CommandResult,
    "running_command_result.json" => agent_api::RunningCommandResult,
    "command_result_succeeded.json" => agent_api::CommandResult,
    "command_result_failed.json" => agent_api::CommandResult,
    "command_result_version_mismatch.json" => agent_api::CommandResult,
    "command_list.json" => agent_api::CommandList,
    "agent_fault.json" => agent_api::AgentFault,
    "agent_status.json" => agent_api::AgentStatus,
    "agent_root.json" => agent_api::AgentRoot,
    "agent_v1.json" => agent_api::AgentV1,
    "lookup_response.json" => ramdisk::LookupResponse,
    "lookup_response_legacy.json" => ramdisk::LookupResponse,
    "heartbeat_request.json" => ramdisk::HeartbeatRequest,
    "heartbeat_request_old.json" => ramdisk::HeartbeatRequest,
    "image_info.json" => image_info::ImageInfo,
    "deploy_steps_listing.json" => steps::DeployStepsListing,
    "deploy_step_result.json" => steps::DeployStepResult,
    "clean_steps_listing.json" => steps::CleanStepsListing,
    "clean_step_result.json" => steps::CleanStepResult,
    "service_step_result.json" => steps::ServiceStepResult,
    "controller_root.json" => controller_api::ControllerRoot,
    "error_body.json" => controller_api::ErrorBody,
    "inventory.json" => inventory::Inventory,
    "provision_request.json" => controller_api::ProvisionRequest,
    "power_request.json" => controller_api::PowerRequest,
    "node_create.json" => controller_api::NodeCreate,
    "port_create.json" => controller_api::PortCreate,
    "node.json" => controller_api::Node,
    "port.json" => controller_api::Port,
    "node_list.json" => controller_api::NodeList,
    "port_list.json" => controller_api::PortList,
    "controller_v1.json" => controller_api::ControllerV1,
    "node_states.json" => controller_api::NodeStates,
    "node_validation.json" => controller_api::NodeValidation,
    "driver_list.json" => controller_api::DriverList,
    "boot_device_request.json" => controller_api::BootDeviceRequest,
    "boot_device_info.json" => controller_api::BootDeviceInfo,
}

#[test]
fn every_fixture_file_is_checked() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !COVERED.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures with no round-trip check: {missing:?}"
    );
}

#[test]
fn generated_documents_match_their_fixtures() {
    let root = serde_json::to_value(agent_api::AgentRoot::new("http://10.0.0.5:9999")).unwrap();
    let v1 = serde_json::to_value(agent_api::AgentV1::new("http://10.0.0.5:9999")).unwrap();
    let controller =
        serde_json::to_value(controller_api::ControllerRoot::new("http://127.0.0.1:6385")).unwrap();
    let read = |n: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join(n)).unwrap()).unwrap()
    };
    assert_eq!(root, read("agent_root.json"));
    assert_eq!(v1, read("agent_v1.json"));
    assert_eq!(controller, read("controller_root.json"));
    let controller_v1 = serde_json::to_value(controller_api::ControllerV1::new(
        "http://127.0.0.1:6385",
        true,
    ))
    .unwrap();
    assert_eq!(controller_v1, read("controller_v1.json"));
    let error = controller_api::ErrorBody::new(404, "Node node-1 could not be found.");
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        read("error_body.json")
    );
    assert_eq!(error.message(), "Node node-1 could not be found.");
}

#[test]
fn readers_ignore_unknown_fields() {
    let mut lookup = serde_json::json!({
        "node": {"uuid": "u", "a_future_field": 1},
        "config": {"agent_token": "t", "a_future_policy": {"x": 1}},
        "something_new": true
    });
    let parsed: ramdisk::LookupResponse = serde_json::from_value(lookup.take()).unwrap();
    assert_eq!(parsed.node.uuid, "u");
    assert_eq!(parsed.config.agent_token.as_deref(), Some("t"));

    let result: agent_api::CommandResult = serde_json::from_value(serde_json::json!({
        "id": "i", "command_name": "sync", "command_status": "SUCCEEDED",
        "command_error": null, "command_result": null, "command_params": {}
    }))
    .unwrap();
    assert!(result.command_status.is_done());
}

#[test]
fn version_mismatch_alias_is_understood() {
    let status: agent_api::CommandStatus = serde_json::from_str("\"VERSION_MISMATCH\"").unwrap();
    assert_eq!(status, agent_api::CommandStatus::CleanVersionMismatch);
}
