//! The conductor: moves nodes through the provision state machine, drives their
//! hardware through the drivers and their agents through [`AgentClient`].
//!
//! Requests from the API take the node's lock, validate, record the first state
//! change and return; the rest of the operation continues in a background task
//! that holds the lock until it is done (Ironic's `reservation`).

pub mod deploy;
pub mod locks;
pub mod periodic;
pub mod states;

use std::sync::Arc;

use ironclad_versioning::controller_api::{Node, ProvisionRequest};
use ironclad_versioning::microversion::ApiVersion;
use ironclad_versioning::ramdisk::{HeartbeatRequest, MASKED_TOKEN};
use ironclad_versioning::states::{PowerState, PowerTarget, ProvisionState};
use serde_json::{json, Map, Value};

use crate::agent_client::AgentClient;
use crate::config::Config;
use crate::drivers::{BootDevice, BootTask, DriverError, DriverRegistry};
use crate::store::{Store, StoreError};
use locks::{NodeLock, NodeLocks};
use states::Event;

/// What can go wrong in the conductor; the API maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ConductorError {
    /// No such node (404).
    #[error("Node {0} could not be found.")]
    NodeNotFound(String),
    /// Lookup found nothing it may reveal (404).
    #[error("Node not found.")]
    LookupNotFound,
    /// Someone holds the node's lock (409).
    #[error("Node {node} is locked by host {host}, please retry after the current operation is completed.")]
    NodeLocked {
        /// The node.
        node: String,
        /// The lock holder.
        host: String,
    },
    /// The verb is not valid in the node's state (400).
    #[error("The requested action \"{action}\" can not be performed on node \"{node}\" while it is in state \"{state}\".")]
    InvalidState {
        /// The verb.
        action: String,
        /// The node.
        node: String,
        /// Its state.
        state: String,
    },
    /// A request parameter is wrong (400).
    #[error("{0}")]
    InvalidParameter(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

type Result<T> = std::result::Result<T, ConductorError>;

/// Keys of `driver_internal_info` that belong to one boot of the agent.
const AGENT_BOOT_KEYS: &[&str] = &[
    "agent_url",
    "agent_verify_ca",
    "agent_secret_token",
    "agent_secret_token_pregenerated",
    "agent_cached_deploy_steps",
    "agent_cached_clean_steps",
    "agent_cached_deploy_steps_refreshed",
    "hardware_manager_version",
    DEPLOY_PROGRESS_KEY,
];

/// `driver_internal_info` key holding the agent's last reported image-write
/// progress while `write_image` runs (refreshed at each heartbeat).
pub const DEPLOY_PROGRESS_KEY: &str = "deploy_progress";

struct Inner {
    store: Store,
    config: Config,
    drivers: DriverRegistry,
    agents: AgentClient,
    locks: NodeLocks,
}

/// The conductor. Cheap to clone.
#[derive(Clone)]
pub struct Conductor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("name", &self.inner.config.conductor_name)
            .finish_non_exhaustive()
    }
}

/// Removes every trace of the current agent boot (URL, certificate, token, cached steps).
pub fn wipe_agent_data(node: &mut Node) {
    for key in AGENT_BOOT_KEYS {
        node.driver_internal_info.remove(*key);
    }
}

fn set_state(node: &mut Node, state: ProvisionState) {
    node.provision_state = Some(state);
    node.target_provision_state = states::target_of(state);
    node.provision_updated_at = Some(crate::timestamp_now());
}

fn dii_str<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.driver_internal_info.get(key).and_then(Value::as_str)
}

/// Checks `instance_info` before a deploy: an image and a way to verify it.
pub fn validate_instance_info(node: &Node) -> Result<()> {
    let info = &node.instance_info;
    let has = |key: &str| {
        info.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    let mut missing = Vec::new();
    if !has("image_source") {
        missing.push("instance_info.image_source");
    }
    let has_os_hash = has("image_os_hash_algo") && has("image_os_hash_value");
    if !(has("image_checksum") || has_os_hash) {
        missing
            .push("instance_info.image_checksum (or image_os_hash_algo and image_os_hash_value)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(ConductorError::InvalidParameter(format!(
        "Node {} cannot be deployed: missing {}. Set them with `ironclad node set {} --instance-info image_source=URL --instance-info image_checksum=HEX` and deploy again.",
        node.uuid,
        missing.join(", "),
        node.uuid
    )))
}

impl Conductor {
    /// A conductor over `store`, with the drivers `config` enables.
    pub fn new(store: Store, config: Config) -> Self {
        let drivers = DriverRegistry::new(&config.driver_settings());
        Self::with_drivers(store, config, drivers)
    }

    /// A conductor over `store` with the given drivers.
    pub fn with_drivers(store: Store, config: Config, drivers: DriverRegistry) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                drivers,
                agents: AgentClient::new(),
                locks: NodeLocks::default(),
            }),
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The known hardware types.
    pub fn drivers(&self) -> &DriverRegistry {
        &self.inner.drivers
    }

    /// The conductor holding the node's lock, if any (the `reservation` field).
    pub fn reservation(&self, uuid: &str) -> Option<String> {
        self.inner
            .locks
            .is_locked(uuid)
            .then(|| self.inner.config.conductor_name.clone())
    }

    /// Takes the node's lock or reports who holds it.
    pub fn lock(&self, uuid: &str) -> Result<NodeLock> {
        self.inner
            .locks
            .try_lock(uuid)
            .ok_or_else(|| ConductorError::NodeLocked {
                node: uuid.to_owned(),
                host: self.inner.config.conductor_name.clone(),
            })
    }

    /// Loads a node by UUID or name.
    pub async fn load(&self, ident: &str) -> Result<Node> {
        self.inner
            .store
            .get_node(ident)
            .await?
            .ok_or_else(|| ConductorError::NodeNotFound(ident.to_owned()))
    }

    /// Saves a node, stamping `updated_at`.
    pub async fn save(&self, node: &mut Node) -> Result<()> {
        node.updated_at = Some(crate::timestamp_now());
        self.inner.store.update_node(node).await?;
        Ok(())
    }

    /// The node's ports, for its boot task.
    async fn boot_task_ports(
        &self,
        node: &Node,
    ) -> Result<Vec<ironclad_versioning::controller_api::Port>> {
        Ok(self.inner.store.ports_of_node(&node.uuid).await?)
    }

    /// Prepares the node's boot interface to boot the ramdisk, sets the boot device
    /// and reboots it.
    pub(crate) async fn boot_ramdisk(&self, node: &mut Node) -> Result<()> {
        let drivers = &self.inner.drivers;
        let boot = drivers.boot(node)?;
        let ports = self.boot_task_ports(node).await?;
        boot.prepare_ramdisk(BootTask {
            node,
            ports: &ports,
        })
        .await?;
        drivers
            .management(node)?
            .set_boot_device(node, boot.ramdisk_boot_device(), false)
            .await?;
        self.power_action(node, PowerTarget::Rebooting).await
    }

    /// Ends a ramdisk boot and sets the node up to boot its instance from disk
    /// (the node is expected to be off).
    pub(crate) async fn boot_instance(&self, node: &mut Node) -> Result<()> {
        let drivers = &self.inner.drivers;
        let boot = drivers.boot(node)?;
        let ports = self.boot_task_ports(node).await?;
        boot.clean_up_ramdisk(BootTask {
            node,
            ports: &ports,
        })
        .await?;
        drivers
            .management(node)?
            .set_boot_device(node, BootDevice::Disk, true)
            .await?;
        boot.prepare_instance(BootTask {
            node,
            ports: &ports,
        })
        .await?;
        self.power_action(node, PowerTarget::On).await
    }

    /// Applies `event` to the node's state; an impossible move is an internal error.
    fn apply(&self, node: &mut Node, event: Event) -> Result<()> {
        let from = node.provision_state.unwrap_or(ProvisionState::Available);
        let to = states::next_state(from, event).ok_or_else(|| ConductorError::InvalidState {
            action: event.verb().to_owned(),
            node: node.uuid.clone(),
            state: from.to_string(),
        })?;
        tracing::info!(node = %node.uuid, from = %from, to = %to, event = event.verb(), "provision state change");
        set_state(node, to);
        Ok(())
    }

    /// Changes the node's power through its driver and records the result.
    /// Powering off or rebooting wipes the agent's boot data (a new boot gets a new token).
    pub async fn power_action(&self, node: &mut Node, target: PowerTarget) -> Result<()> {
        self.power_action_within(node, target, None).await
    }

    /// As [`Conductor::power_action`], waiting at most `timeout` for the BMC.
    pub async fn power_action_within(
        &self,
        node: &mut Node,
        target: PowerTarget,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        let power = self.inner.drivers.power(node)?;
        let reached = power.set_power_state(node, target, timeout).await?;
        node.power_state = Some(reached);
        node.target_power_state = None;
        if target != PowerTarget::On {
            wipe_agent_data(node);
        }
        tracing::info!(node = %node.uuid, target = %target, reached = %reached, "power action");
        Ok(())
    }

    /// Starts a provision action (`PUT /states/provision`). Returns once the first
    /// state change is recorded; the rest continues in the background.
    pub async fn provision(
        &self,
        ident: &str,
        event: Event,
        request: &ProvisionRequest,
    ) -> Result<Node> {
        let found = self.load(ident).await?;
        let guard = self.lock(&found.uuid)?;
        let mut node = self.load(&found.uuid).await?;
        let from = node.provision_state.unwrap_or(ProvisionState::Available);
        let invalid = || ConductorError::InvalidState {
            action: request.target.clone(),
            node: node.uuid.clone(),
            state: from.to_string(),
        };
        states::next_state(from, event).ok_or_else(invalid)?;
        if matches!(event, Event::Deploy | Event::Rebuild) {
            if node.maintenance {
                return Err(ConductorError::InvalidParameter(format!(
                    "Node {} is in maintenance mode: take it out of maintenance before deploying.",
                    node.uuid
                )));
            }
            validate_instance_info(&node)?;
            if let Some(configdrive) = &request.configdrive {
                node.instance_info
                    .insert("configdrive".to_owned(), configdrive.clone());
            }
            wipe_agent_data(&mut node);
            node.driver_internal_info.remove("root_uuid_or_disk_id");
            node.deploy_step = Map::new();
        }
        node.last_error = None;
        self.apply(&mut node, event)?;
        self.save(&mut node).await?;
        let conductor = self.clone();
        let reply = node.clone();
        tokio::spawn(async move {
            conductor.continue_provision(node, event, guard).await;
        });
        Ok(reply)
    }

    async fn continue_provision(&self, mut node: Node, event: Event, _guard: NodeLock) {
        let outcome = match event {
            Event::Manage => self.verify(&mut node).await,
            Event::Inspect => self.inspect(&mut node).await,
            Event::Provide => self.automated_clean(&mut node).await,
            Event::Deploy | Event::Rebuild => self.boot_deploy_ramdisk(&mut node).await,
            Event::Delete => self.tear_down(&mut node).await,
            _ => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::error!(node = %node.uuid, %error, "provision action failed");
        }
    }

    async fn verify(&self, node: &mut Node) -> Result<()> {
        if node.provision_state != Some(ProvisionState::Verifying) {
            return Ok(());
        }
        let result = match self.inner.drivers.power(node) {
            Ok(power) => match power.validate(node).await {
                Ok(()) => power.get_power_state(node).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match result {
            Ok(power) => {
                node.power_state = Some(power);
                self.apply(node, Event::Done)?;
            }
            Err(error) => {
                node.last_error = Some(format!(
                    "Failed to verify the power credentials of node {}: {error}. Fix driver_info and run `manage` again.",
                    node.uuid
                ));
                self.apply(node, Event::Fail)?;
            }
        }
        self.save(node).await
    }

    /// Out-of-band inspection: the inspect interface reads the hardware; its
    /// properties are merged into the node and a port is created per new MAC.
    async fn inspect(&self, node: &mut Node) -> Result<()> {
        node.inspection_started_at = Some(crate::timestamp_now());
        node.inspection_finished_at = None;
        let result = async {
            let inspect = self.inner.drivers.inspect(node)?;
            inspect.validate(node).await?;
            Ok::<_, ConductorError>(inspect.inspect_hardware(node).await?)
        }
        .await;
        match result {
            Ok(found) => {
                for (key, value) in found.properties {
                    let merged = match (key.as_str(), node.properties.get(&key), &value) {
                        ("capabilities", Some(Value::String(old)), Value::String(new)) => {
                            json!(merge_capabilities(old, new))
                        }
                        _ => value,
                    };
                    node.properties.insert(key, merged);
                }
                let known: Vec<String> = self
                    .inner
                    .store
                    .ports_of_node(&node.uuid)
                    .await?
                    .into_iter()
                    .map(|p| p.address.to_ascii_lowercase())
                    .collect();
                for mac in found.macs.iter().filter(|m| !known.contains(m)) {
                    let uuid = uuid::Uuid::new_v4().to_string();
                    let mut document = crate::api::views::port_template(&uuid, mac, &node.uuid);
                    document["created_at"] = json!(crate::timestamp_now());
                    let port = serde_json::from_value(document).map_err(|e| {
                        ConductorError::InvalidParameter(format!("cannot build a port: {e}"))
                    })?;
                    match self.inner.store.create_port(&port).await {
                        Ok(()) => {
                            tracing::info!(node = %node.uuid, mac, "port created by inspection")
                        }
                        Err(error) => {
                            tracing::warn!(node = %node.uuid, mac, %error, "inspection found a MAC that cannot become a port")
                        }
                    }
                }
                node.inspection_finished_at = Some(crate::timestamp_now());
                self.apply(node, Event::Done)?;
            }
            Err(error) => {
                node.last_error = Some(format!(
                    "Failed to inspect node {}: {error}. Fix the cause and inspect again.",
                    node.uuid
                ));
                self.apply(node, Event::Fail)?;
            }
        }
        self.save(node).await
    }

    async fn automated_clean(&self, node: &mut Node) -> Result<()> {
        // Automated cleaning (erasing disks through the agent) is a later issue: the
        // node passes through `cleaning` straight to `available`.
        tracing::info!(node = %node.uuid, "automated cleaning is not implemented yet; skipping it");
        node.clean_step = Map::new();
        self.apply(node, Event::Done)?;
        self.save(node).await
    }

    async fn boot_deploy_ramdisk(&self, node: &mut Node) -> Result<()> {
        let result = async {
            let boot = self.inner.drivers.boot(node)?;
            let ports = self.boot_task_ports(node).await?;
            if node.provision_state == Some(ProvisionState::Deploying) {
                boot.clean_up_instance(BootTask {
                    node,
                    ports: &ports,
                })
                .await?;
            }
            self.boot_ramdisk(node).await
        }
        .await;
        match result {
            Ok(()) => {
                node.deploy_step = step_map("deploy", 100);
                self.apply(node, Event::Wait)?;
            }
            Err(error) => {
                node.last_error = Some(format!(
                    "Failed to boot node {} into the deploy ramdisk: {error}. Check the BMC and deploy again.",
                    node.uuid
                ));
                node.deploy_step = Map::new();
                self.apply(node, Event::Fail)?;
            }
        }
        self.save(node).await
    }

    async fn tear_down(&self, node: &mut Node) -> Result<()> {
        let result = async {
            let boot = self.inner.drivers.boot(node)?;
            let ports = self.boot_task_ports(node).await?;
            self.power_action(node, PowerTarget::Off).await?;
            boot.clean_up_instance(BootTask {
                node,
                ports: &ports,
            })
            .await?;
            boot.clean_up_ramdisk(BootTask {
                node,
                ports: &ports,
            })
            .await?;
            Ok::<(), ConductorError>(())
        }
        .await;
        if let Err(error) = result {
            node.last_error = Some(format!(
                "Failed to tear down node {}: {error}. Check the BMC, then undeploy again.",
                node.uuid
            ));
            self.apply(node, Event::Fail)?;
            return self.save(node).await;
        }
        node.instance_info = Map::new();
        node.instance_uuid = None;
        node.deploy_step = Map::new();
        wipe_agent_data(node);
        node.driver_internal_info.remove("root_uuid_or_disk_id");
        self.apply(node, Event::Clean)?;
        self.save(node).await?;
        self.automated_clean(node).await
    }

    /// Starts a power change (`PUT /states/power`); the driver call runs in the background.
    pub async fn set_power(
        &self,
        ident: &str,
        target: PowerTarget,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        let found = self.load(ident).await?;
        let guard = self.lock(&found.uuid)?;
        let mut node = self.load(&found.uuid).await?;
        let state = node.provision_state.unwrap_or(ProvisionState::Available);
        if matches!(state, ProvisionState::Cleaning | ProvisionState::CleanWait) {
            return Err(ConductorError::InvalidParameter(format!(
                "Can not change the power state of node {} while it is in state \"{state}\".",
                node.uuid
            )));
        }
        if node.disable_power_off && matches!(target, PowerTarget::Off | PowerTarget::SoftOff) {
            return Err(ConductorError::InvalidParameter(format!(
                "Node {} has disable_power_off set: it cannot be powered off.",
                node.uuid
            )));
        }
        let power = self.inner.drivers.power(&node)?;
        power.validate(&node).await?;
        node.target_power_state = Some(match target {
            PowerTarget::Off | PowerTarget::SoftOff => PowerState::Off,
            _ => PowerState::On,
        });
        self.save(&mut node).await?;
        let conductor = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(error) = conductor
                .power_action_within(&mut node, target, timeout)
                .await
            {
                node.target_power_state = None;
                node.last_error = Some(format!(
                    "Failed to change the power state of node {} to \"{target}\": {error}. Check the BMC and retry.",
                    node.uuid
                ));
            }
            if let Err(error) = conductor.save(&mut node).await {
                tracing::error!(node = %node.uuid, %error, "cannot record the power state");
            }
        });
        Ok(())
    }

    /// Reads the node's boot device through its management interface.
    pub async fn boot_device(&self, node: &Node) -> Result<(Option<BootDevice>, Option<bool>)> {
        let management = self.inner.drivers.management(node)?;
        Ok(management.get_boot_device(node).await?)
    }

    /// Sets the node's boot device through its management interface (`PUT
    /// /management/boot_device`); waits for the BMC.
    pub async fn set_boot_device(
        &self,
        ident: &str,
        device: BootDevice,
        persistent: bool,
    ) -> Result<()> {
        let found = self.load(ident).await?;
        let _guard = self.lock(&found.uuid)?;
        let node = self.load(&found.uuid).await?;
        let management = self.inner.drivers.management(&node)?;
        management.validate(&node).await?;
        management
            .set_boot_device(&node, device, persistent)
            .await?;
        tracing::info!(node = %node.uuid, device = device.as_str(), persistent, "boot device set");
        Ok(())
    }

    /// Ramdisk lookup: finds the node by UUID or MAC in a lookup-allowed state and,
    /// when `mint_token`, hands out the agent token once per boot (`******` afterwards).
    pub async fn lookup(
        &self,
        macs: &[String],
        node_uuid: Option<&str>,
        mint_token: bool,
    ) -> Result<(Node, Option<String>)> {
        let found = match node_uuid {
            Some(uuid) => self.inner.store.get_node(uuid).await?,
            None => self.inner.store.find_node_by_macs(macs).await?,
        };
        let node = found.ok_or(ConductorError::LookupNotFound)?;
        let allowed = |node: &Node| {
            node.provision_state
                .is_some_and(ProvisionState::allows_lookup)
        };
        if !allowed(&node) {
            tracing::info!(node = %node.uuid, state = ?node.provision_state, "lookup refused: state does not allow lookup");
            return Err(ConductorError::LookupNotFound);
        }
        if !mint_token {
            return Ok((node, None));
        }
        let _guard = self.lock(&node.uuid)?;
        let mut node = self.load(&node.uuid).await?;
        if !allowed(&node) {
            return Err(ConductorError::LookupNotFound);
        }
        if dii_str(&node, "agent_secret_token").is_some() {
            return Ok((node, Some(MASKED_TOKEN.to_owned())));
        }
        let token = crate::secrets::mint_agent_token();
        node.driver_internal_info.insert(
            "agent_secret_token".to_owned(),
            Value::String(token.clone()),
        );
        self.save(&mut node).await?;
        tracing::info!(node = %node.uuid, "agent token handed out");
        Ok((node, Some(token)))
    }

    /// Accepts a heartbeat: validates and records it, then processes it in the background.
    pub async fn heartbeat(
        &self,
        ident: &str,
        request: &HeartbeatRequest,
        _version: ApiVersion,
    ) -> Result<()> {
        let found = self.load(ident).await?;
        let Some(guard) = self.inner.locks.try_lock(&found.uuid) else {
            if dii_str(&found, "agent_url").is_none() {
                // No agent recorded yet: make the agent retry soon rather than wait a full interval.
                return Err(ConductorError::NodeLocked {
                    node: found.uuid.clone(),
                    host: self.inner.config.conductor_name.clone(),
                });
            }
            tracing::info!(node = %found.uuid, "node is locked; heartbeat dropped, the agent will heartbeat again");
            return Ok(());
        };
        let mut node = self.load(&found.uuid).await?;
        let stored = dii_str(&node, "agent_secret_token");
        if stored.is_none() || request.agent_token.as_deref() != stored {
            return Err(ConductorError::InvalidParameter(
                "Invalid or missing agent token received.".to_owned(),
            ));
        }
        if let Some(url) = dii_str(&node, "agent_url") {
            if url != request.callback_url {
                return Err(ConductorError::InvalidParameter(
                    "Detected change in ramdisk provided callback_url".to_owned(),
                ));
            }
        }
        if let Some(ca) = dii_str(&node, "agent_verify_ca") {
            if request
                .agent_verify_ca
                .as_deref()
                .is_some_and(|new| new != ca)
            {
                return Err(ConductorError::InvalidParameter(
                    "Detected change in ramdisk provided agent_verify_ca".to_owned(),
                ));
            }
        }
        let dii = &mut node.driver_internal_info;
        dii.insert("agent_url".to_owned(), json!(request.callback_url));
        dii.insert("agent_version".to_owned(), json!(request.agent_version));
        dii.insert(
            "agent_last_heartbeat".to_owned(),
            json!(crate::timestamp_now()),
        );
        if let Some(ca) = &request.agent_verify_ca {
            dii.insert("agent_verify_ca".to_owned(), json!(ca));
        }
        if let Some(status) = &request.agent_status {
            dii.insert("agent_status".to_owned(), json!(status));
            dii.insert(
                "agent_status_message".to_owned(),
                json!(request.agent_status_message),
            );
        }
        let state = node.provision_state.unwrap_or(ProvisionState::Available);
        if matches!(
            state,
            ProvisionState::DeployWait
                | ProvisionState::CleanWait
                | ProvisionState::RescueWait
                | ProvisionState::ServiceWait
                | ProvisionState::InspectWait
        ) {
            node.provision_updated_at = Some(crate::timestamp_now());
        }
        self.save(&mut node).await?;
        let conductor = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            conductor.process_heartbeat(node).await;
        });
        Ok(())
    }

    async fn process_heartbeat(&self, node: Node) {
        let state = node.provision_state.unwrap_or(ProvisionState::Available);
        if node.maintenance {
            tracing::info!(node = %node.uuid, "heartbeat from a node in maintenance: recorded only");
            return;
        }
        match state {
            ProvisionState::DeployWait => self.continue_deploy(node).await,
            other => {
                tracing::debug!(node = %node.uuid, state = %other, "heartbeat recorded; nothing to do in this state");
            }
        }
    }

    /// At start: boot interfaces restore what a restart lost (the DHCP host files
    /// of nodes booting the ramdisk or an iSCSI volume).
    pub async fn restore_boot(&self) -> Result<()> {
        for state in ProvisionState::ALL
            .iter()
            .copied()
            .filter(|s| crate::drivers::ipxe::boots_ramdisk(*s) || *s == ProvisionState::Active)
        {
            for node in self.inner.store.nodes_in_state(state).await? {
                let Ok(boot) = self.inner.drivers.boot(&node) else {
                    continue;
                };
                let ports = self.boot_task_ports(&node).await?;
                if let Err(error) = boot
                    .restore(BootTask {
                        node: &node,
                        ports: &ports,
                    })
                    .await
                {
                    tracing::warn!(node = %node.uuid, %error, "cannot restore the node's boot set-up");
                }
            }
        }
        Ok(())
    }

    /// At start: nodes left in states that cannot survive a restart move to their failure state.
    pub async fn recover_interrupted(&self) -> Result<()> {
        for state in ProvisionState::ALL
            .iter()
            .copied()
            .filter(|s| states::fails_on_restart(*s))
        {
            for mut node in self.inner.store.nodes_in_state(state).await? {
                node.last_error = Some(format!(
                    "The controller stopped while node {} was in state \"{state}\"; the operation was abandoned. Retry it.",
                    node.uuid
                ));
                if let Err(error) = self.apply(&mut node, Event::Fail) {
                    tracing::warn!(node = %node.uuid, %error, "cannot fail interrupted node");
                    continue;
                }
                node.deploy_step = Map::new();
                self.save(&mut node).await?;
                tracing::warn!(node = %node.uuid, state = %state, "interrupted operation failed at start");
            }
        }
        Ok(())
    }
}

/// Merges `key:value` capability lists; `new` wins for keys in both.
pub fn merge_capabilities(old: &str, new: &str) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in old.split(',').chain(new.split(',')) {
        let Some((key, value)) = item.trim().split_once(':') else {
            continue;
        };
        match pairs.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value.to_owned(),
            None => pairs.push((key.to_owned(), value.to_owned())),
        }
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn step_map(step: &str, priority: i64) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("step".to_owned(), json!(step));
    map.insert("priority".to_owned(), json!(priority));
    map.insert("interface".to_owned(), json!("deploy"));
    map
}
