//! The heartbeat-driven `direct` deploy, as Ironic's agent deploy runs it.
//!
//! Each heartbeat in `wait call-back` moves the deploy one step: the first asks
//! the agent for its deploy steps and starts `write_image`; later ones poll the
//! command list until `write_image` finishes, then the conductor collects the
//! partition UUIDs, syncs and powers the agent off, and boots the instance.

use base64::Engine;
use ironclad_versioning::agent_api::{CommandResult, CommandStatus, RunningCommandResult};
use ironclad_versioning::controller_api::Node;
use ironclad_versioning::image_info::ImageInfo;
use ironclad_versioning::states::PowerTarget;
use serde_json::{json, Map, Value};

use super::states::Event;
use super::{dii_str, step_map, wipe_agent_data, Conductor, ConductorError, DEPLOY_PROGRESS_KEY};
use crate::agent_client::{AgentClientError, AgentEndpoint};

/// The deploy step that writes the image.
const WRITE_IMAGE_PRIORITY: i64 = 80;

/// Builds `image_info` for `write_image` from the node's `instance_info`.
pub fn build_image_info(node: &Node) -> ImageInfo {
    let info = &node.instance_info;
    let text = |key: &str| info.get(key).and_then(Value::as_str).map(str::to_owned);
    let source = text("image_source").unwrap_or_default();
    ImageInfo {
        id: source.clone(),
        urls: vec![source],
        checksum: text("image_checksum"),
        os_hash_algo: text("image_os_hash_algo"),
        os_hash_value: text("image_os_hash_value"),
        disk_format: Some(text("image_disk_format").unwrap_or_else(|| "raw".to_owned())),
        container_format: Some("bare".to_owned()),
        stream_raw_images: Some(true),
        image_type: Some("whole-disk-image".to_owned()),
        node_uuid: Some(node.uuid.clone()),
        ..ImageInfo::default()
    }
}

fn endpoint(node: &Node) -> Option<AgentEndpoint> {
    Some(AgentEndpoint {
        url: dii_str(node, "agent_url")?.to_owned(),
        token: dii_str(node, "agent_secret_token").map(str::to_owned),
        verify_ca: dii_str(node, "agent_verify_ca").map(str::to_owned),
    })
}

fn failure_text(result: &CommandResult) -> String {
    match &result.command_error {
        Some(error) if !error.details.is_empty() => error.details.clone(),
        Some(error) => error.message.clone(),
        None => "the agent reported a failure without details".to_owned(),
    }
}

impl Conductor {
    fn node_and_ports<'a>(
        &self,
        node: &'a Node,
        ports: &'a [ironclad_versioning::controller_api::Port],
    ) -> (Value, Value) {
        let mut shown = node.clone();
        crate::secrets::mask_node(&mut shown);
        (json!(shown), json!(ports))
    }

    /// One heartbeat's worth of deploy progress for a node in `wait call-back`.
    pub(crate) async fn continue_deploy(&self, mut node: Node) {
        match self.deploy_step(&mut node).await {
            Ok(()) => {}
            Err(StepError::Busy(message)) => {
                tracing::info!(node = %node.uuid, %message, "agent busy; retrying on the next heartbeat");
            }
            Err(StepError::Failed(message)) => {
                self.fail_deploy(&mut node, message).await;
            }
        }
    }

    async fn deploy_step(&self, node: &mut Node) -> Result<(), StepError> {
        let Some(agent) = endpoint(node) else {
            return Err(StepError::Failed(
                "the agent sent no callback URL".to_owned(),
            ));
        };
        let ports = self
            .store()
            .ports_of_node(&node.uuid)
            .await
            .map_err(|e| StepError::Failed(e.to_string()))?;
        let (node_json, ports_json) = self.node_and_ports(node, &ports);
        let agents = &self.inner.agents;

        if !node
            .driver_internal_info
            .contains_key("agent_cached_deploy_steps")
        {
            let mut params = Map::new();
            params.insert("node".to_owned(), node_json.clone());
            params.insert("ports".to_owned(), ports_json.clone());
            let result = agents
                .execute(&agent, "deploy.get_deploy_steps", params, true)
                .await
                .map_err(agent_error("deploy.get_deploy_steps"))?;
            if result.command_status == CommandStatus::Failed {
                return Err(StepError::Failed(format!(
                    "The agent could not list its deploy steps: {}",
                    failure_text(&result)
                )));
            }
            let listing = result.command_result.unwrap_or(Value::Null);
            let steps = listing.get("deploy_steps").cloned().unwrap_or(json!({}));
            let versions = listing
                .get("hardware_manager_version")
                .cloned()
                .unwrap_or(json!({}));
            node.driver_internal_info
                .insert("agent_cached_deploy_steps".to_owned(), steps);
            node.driver_internal_info
                .insert("hardware_manager_version".to_owned(), versions);
            self.save(node).await.map_err(store_error)?;
            return self
                .start_write_image(node, &agent, node_json, ports_json)
                .await;
        }

        let commands = agents
            .list_commands(&agent)
            .await
            .map_err(agent_error("listing commands"))?;
        let last = commands
            .iter()
            .rev()
            .find(|c| c.command_name != "get_deploy_steps");
        let Some(last) = last.filter(|c| c.command_name == "execute_deploy_step") else {
            // write_image was never accepted (e.g. the agent was busy): start it now.
            return self
                .start_write_image(node, &agent, node_json, ports_json)
                .await;
        };
        match last.command_status {
            CommandStatus::Running => {
                // Agents that report progress (Ironclad's) put it in the running
                // command's result; IPA leaves it null, which is fine too.
                let progress = last
                    .command_result
                    .clone()
                    .and_then(|r| serde_json::from_value::<RunningCommandResult>(r).ok());
                match progress {
                    Some(running) => {
                        tracing::info!(
                            node = %node.uuid,
                            stage = %running.progress.stage,
                            bytes_written = running.progress.bytes_written,
                            "write_image running"
                        );
                        node.driver_internal_info
                            .insert(DEPLOY_PROGRESS_KEY.to_owned(), json!(running.progress));
                        self.save(node).await.map_err(store_error)
                    }
                    None => {
                        tracing::debug!(node = %node.uuid, "write_image still running");
                        Ok(())
                    }
                }
            }
            CommandStatus::CleanVersionMismatch => {
                tracing::warn!(node = %node.uuid, "hardware managers changed; refreshing deploy steps on the next heartbeat");
                node.driver_internal_info
                    .remove("agent_cached_deploy_steps");
                self.save(node).await.map_err(store_error)
            }
            CommandStatus::Failed => {
                let details = failure_text(last);
                let logs = self.collect_logs(node, &agent).await;
                Err(StepError::Failed(format!(
                    "Deploy step deploy.write_image failed: {details}. {logs}"
                )))
            }
            CommandStatus::Succeeded => self.finish_deploy(node, &agent).await,
        }
    }

    async fn start_write_image(
        &self,
        node: &mut Node,
        agent: &AgentEndpoint,
        node_json: Value,
        ports_json: Value,
    ) -> Result<(), StepError> {
        let image_info = build_image_info(node);
        let mut args = Map::new();
        args.insert("image_info".to_owned(), json!(image_info));
        args.insert(
            "configdrive".to_owned(),
            node.instance_info
                .get("configdrive")
                .cloned()
                .unwrap_or(Value::Null),
        );
        let mut step = step_map("write_image", WRITE_IMAGE_PRIORITY);
        step.insert("args".to_owned(), Value::Object(args));
        let mut params = Map::new();
        params.insert("step".to_owned(), Value::Object(step));
        params.insert("node".to_owned(), node_json);
        params.insert("ports".to_owned(), ports_json);
        params.insert(
            "deploy_version".to_owned(),
            node.driver_internal_info
                .get("hardware_manager_version")
                .cloned()
                .unwrap_or(json!({})),
        );
        let result = self
            .inner
            .agents
            .execute(agent, "deploy.execute_deploy_step", params, false)
            .await
            .map_err(agent_error("deploy.execute_deploy_step"))?;
        if result.command_status == CommandStatus::Failed {
            return Err(StepError::Failed(format!(
                "Deploy step deploy.write_image failed: {}",
                failure_text(&result)
            )));
        }
        node.deploy_step = step_map("write_image", WRITE_IMAGE_PRIORITY);
        tracing::info!(node = %node.uuid, "write_image started on the agent");
        self.save(node).await.map_err(store_error)
    }

    async fn finish_deploy(&self, node: &mut Node, agent: &AgentEndpoint) -> Result<(), StepError> {
        self.apply(node, Event::Resume).map_err(conductor_error)?;
        node.deploy_step = step_map("prepare_instance_boot", 60);
        self.save(node).await.map_err(store_error)?;
        let agents = &self.inner.agents;

        let uuids = agents
            .execute(agent, "standby.get_partition_uuids", Map::new(), true)
            .await
            .map_err(agent_error("standby.get_partition_uuids"))?;
        if let Some(result) = uuids.command_result.as_ref() {
            let root = result
                .get("root uuid")
                .or_else(|| result.get("disk identifier"))
                .cloned()
                .unwrap_or(Value::Null);
            node.driver_internal_info
                .insert("root_uuid_or_disk_id".to_owned(), root);
        }

        node.deploy_step = step_map("tear_down_agent", 40);
        match agents
            .execute(agent, "standby.sync", Map::new(), true)
            .await
        {
            Ok(result) if result.command_status == CommandStatus::Failed => {
                let text = failure_text(&result);
                if text.contains("Unknown command") {
                    tracing::warn!(node = %node.uuid, "agent does not know standby.sync; continuing");
                } else {
                    return Err(StepError::Failed(format!("standby.sync failed: {text}")));
                }
            }
            Ok(_) => {}
            Err(AgentClientError::Http { faultstring, .. })
                if faultstring.contains("Unknown command") =>
            {
                tracing::warn!(node = %node.uuid, "agent does not know standby.sync; continuing");
            }
            Err(error) => return Err(agent_error("standby.sync")(error)),
        }
        if let Err(error) = agents
            .execute(agent, "standby.power_off", Map::new(), false)
            .await
        {
            // The BMC powers the node off next anyway.
            tracing::warn!(node = %node.uuid, %error, "standby.power_off failed; powering off through the BMC");
        }
        self.power_action(node, PowerTarget::Off)
            .await
            .map_err(conductor_error)?;

        node.deploy_step = step_map("boot_instance", 20);
        self.boot_instance(node)
            .await
            .map_err(|e| StepError::Failed(e.to_string()))?;

        node.deploy_step = Map::new();
        node.last_error = None;
        wipe_agent_data(node);
        self.apply(node, Event::Done).map_err(conductor_error)?;
        self.save(node).await.map_err(store_error)?;
        tracing::info!(node = %node.uuid, "deploy finished; node is active");
        Ok(())
    }

    async fn collect_logs(&self, node: &Node, agent: &AgentEndpoint) -> String {
        let result = self
            .inner
            .agents
            .execute(agent, "log.collect_system_logs", Map::new(), true)
            .await;
        let logs = match result {
            Ok(result) => result
                .command_result
                .as_ref()
                .and_then(|r| r.get("system_logs"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(error) => {
                tracing::warn!(node = %node.uuid, %error, "cannot collect the agent's logs");
                None
            }
        };
        let Some(logs) = logs else {
            return "The agent's logs could not be collected; look at the node's console."
                .to_owned();
        };
        let Some(dir) = self.store().directory().map(|d| d.join("deploy-logs")) else {
            tracing::info!(node = %node.uuid, bytes = logs.len(), "agent logs collected (no directory to store them)");
            return "The agent's logs were collected but there is no directory to store them."
                .to_owned();
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(logs.trim()) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(node = %node.uuid, %error, "agent logs are not base64");
                logs.into_bytes()
            }
        };
        let name = format!(
            "{}_{}.tar.gz",
            node.uuid,
            chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S")
        );
        let path = dir.join(name);
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&path, &bytes).await
        }
        .await;
        match written {
            Ok(()) => format!("The agent's logs are in {}.", path.display()),
            Err(error) => {
                tracing::warn!(node = %node.uuid, %error, "cannot store agent logs");
                "The agent's logs could not be stored; look at the node's console.".to_owned()
            }
        }
    }

    /// Moves a deploying node to `deploy failed`: records why, powers it off and wipes agent data.
    pub(crate) async fn fail_deploy(&self, node: &mut Node, message: String) {
        tracing::error!(node = %node.uuid, %message, "deploy failed");
        node.last_error = Some(format!(
            "{message} Fix the cause, then deploy again (`ironclad node deploy {}`).",
            node.uuid
        ));
        if let Err(error) = self.power_action(node, PowerTarget::Off).await {
            tracing::warn!(node = %node.uuid, %error, "cannot power off the failed node");
        }
        wipe_agent_data(node);
        node.deploy_step = Map::new();
        if let Err(error) = self.apply(node, Event::Fail) {
            tracing::error!(node = %node.uuid, %error, "cannot move the node to deploy failed");
            return;
        }
        if let Err(error) = self.save(node).await {
            tracing::error!(node = %node.uuid, %error, "cannot record the deploy failure");
        }
    }
}

/// How one deploy step ended, when it did not succeed.
#[derive(Debug)]
enum StepError {
    /// The agent is busy: nothing changes, the next heartbeat retries.
    Busy(String),
    /// The deploy failed.
    Failed(String),
}

fn agent_error(what: &'static str) -> impl Fn(AgentClientError) -> StepError {
    move |error| match error {
        AgentClientError::AgentBusy(message) => StepError::Busy(message),
        other => StepError::Failed(format!("Agent command {what} failed: {other}.")),
    }
}

fn store_error(error: ConductorError) -> StepError {
    StepError::Failed(format!("Cannot record the deploy progress: {error}."))
}

fn conductor_error(error: ConductorError) -> StepError {
    StepError::Failed(format!("{error}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_info_comes_from_instance_info() {
        let node: Node = serde_json::from_value(json!({
            "uuid": "u1", "name": null, "driver": "fake-hardware",
            "boot_interface": null, "console_interface": null, "deploy_interface": null,
            "inspect_interface": null, "management_interface": null, "network_interface": null,
            "power_interface": null, "raid_interface": null, "rescue_interface": null,
            "storage_interface": null, "vendor_interface": null, "bios_interface": null,
            "firmware_interface": null, "properties": {}, "driver_info": {},
            "driver_internal_info": {},
            "instance_info": {"image_source": "http://x/img.qcow2", "image_os_hash_algo": "sha256",
                               "image_os_hash_value": "ab", "image_disk_format": "qcow2"},
            "instance_uuid": null, "provision_state": "wait call-back",
            "target_provision_state": "active", "provision_updated_at": null,
            "power_state": null, "target_power_state": null, "last_error": null,
            "maintenance": false, "maintenance_reason": null, "fault": null,
            "reservation": null, "conductor": null, "conductor_group": "",
            "clean_step": {}, "deploy_step": {}, "service_step": {}, "raid_config": {},
            "target_raid_config": {}, "boot_mode": null, "secure_boot": null, "traits": [],
            "extra": {}, "resource_class": null, "owner": null, "lessee": null,
            "protected": false, "protected_reason": null, "retired": false,
            "retired_reason": null, "automated_clean": null, "network_data": {},
            "console_enabled": false, "inspection_started_at": null,
            "inspection_finished_at": null, "description": null, "allocation_uuid": null,
            "shard": null, "parent_node": null, "disable_power_off": false,
            "created_at": null, "updated_at": null, "links": []
        }))
        .unwrap();
        let info = build_image_info(&node);
        assert_eq!(info.id, "http://x/img.qcow2");
        assert_eq!(info.urls, ["http://x/img.qcow2"]);
        assert_eq!(info.os_hash_algo.as_deref(), Some("sha256"));
        assert_eq!(info.disk_format.as_deref(), Some("qcow2"));
        assert_eq!(info.container_format.as_deref(), Some("bare"));
        assert_eq!(info.stream_raw_images, Some(true));
        assert_eq!(info.image_type.as_deref(), Some("whole-disk-image"));
        assert_eq!(info.node_uuid.as_deref(), Some("u1"));
        assert_eq!(info.checksum, None);
    }
}
