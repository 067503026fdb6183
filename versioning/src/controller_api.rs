//! The controller's Ironic-compatible REST API: resources, requests and error bodies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agent_api::Link;
use crate::microversion::{ApiVersion, MAX_VERSION, MIN_VERSION};
use crate::states::{PowerState, ProvisionState};

/// The value shown instead of a secret.
pub const MASKED_SECRET: &str = "******";

/// A bare-metal node as the API shows it. Fields newer than the request's version
/// are removed from the JSON (see [`crate::microversion::NODE_FIELD_VERSIONS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Node UUID.
    pub uuid: String,
    /// Unique name, if any.
    pub name: Option<String>,
    /// Hardware type, e.g. `fake-hardware`, `redfish`, `ipmi`.
    pub driver: String,
    /// Boot interface.
    pub boot_interface: Option<String>,
    /// Console interface.
    pub console_interface: Option<String>,
    /// Deploy interface.
    pub deploy_interface: Option<String>,
    /// Inspect interface.
    pub inspect_interface: Option<String>,
    /// Management interface.
    pub management_interface: Option<String>,
    /// Network interface.
    pub network_interface: Option<String>,
    /// Power interface.
    pub power_interface: Option<String>,
    /// RAID interface.
    pub raid_interface: Option<String>,
    /// Rescue interface.
    pub rescue_interface: Option<String>,
    /// Storage interface.
    pub storage_interface: Option<String>,
    /// Vendor interface.
    pub vendor_interface: Option<String>,
    /// BIOS interface.
    pub bios_interface: Option<String>,
    /// Firmware interface.
    pub firmware_interface: Option<String>,
    /// Hardware properties (cpu_arch, memory_mb, local_gb, capabilities, root_device).
    pub properties: Map<String, Value>,
    /// BMC access and deploy ramdisk settings; secrets masked.
    pub driver_info: Map<String, Value>,
    /// Conductor scratch space; read-only, secrets masked.
    pub driver_internal_info: Map<String, Value>,
    /// What to deploy (image_source, image_checksum, ...).
    pub instance_info: Map<String, Value>,
    /// UUID of the instance deployed on the node.
    pub instance_uuid: Option<String>,
    /// Current provision state.
    pub provision_state: Option<ProvisionState>,
    /// State the node is moving to, if any.
    pub target_provision_state: Option<ProvisionState>,
    /// When the provision state last changed.
    pub provision_updated_at: Option<String>,
    /// Current power state.
    pub power_state: Option<PowerState>,
    /// Power state the node is moving to, if any.
    pub target_power_state: Option<PowerState>,
    /// What went wrong last, for a person.
    pub last_error: Option<String>,
    /// Whether the node is in maintenance.
    pub maintenance: bool,
    /// Why the node is in maintenance.
    pub maintenance_reason: Option<String>,
    /// Fault that put the node into maintenance.
    pub fault: Option<String>,
    /// Conductor holding the node's lock.
    pub reservation: Option<String>,
    /// Conductor responsible for the node.
    pub conductor: Option<String>,
    /// Conductor group.
    pub conductor_group: String,
    /// Current clean step.
    pub clean_step: Map<String, Value>,
    /// Current deploy step.
    pub deploy_step: Map<String, Value>,
    /// Current service step.
    pub service_step: Map<String, Value>,
    /// Current RAID configuration.
    pub raid_config: Map<String, Value>,
    /// Requested RAID configuration.
    pub target_raid_config: Map<String, Value>,
    /// Boot mode (`uefi`, `bios`).
    pub boot_mode: Option<String>,
    /// Whether secure boot is on.
    pub secure_boot: Option<bool>,
    /// Traits.
    pub traits: Vec<String>,
    /// Operator data.
    pub extra: Map<String, Value>,
    /// Resource class for scheduling.
    pub resource_class: Option<String>,
    /// Owning project.
    pub owner: Option<String>,
    /// Leasing project.
    pub lessee: Option<String>,
    /// Whether the node is protected from teardown.
    pub protected: bool,
    /// Why the node is protected.
    pub protected_reason: Option<String>,
    /// Whether the node is retired.
    pub retired: bool,
    /// Why the node is retired.
    pub retired_reason: Option<String>,
    /// Per-node automated cleaning override.
    pub automated_clean: Option<bool>,
    /// Static network configuration for the ramdisk and instance.
    pub network_data: Map<String, Value>,
    /// Whether the console is enabled.
    pub console_enabled: bool,
    /// When inspection started.
    pub inspection_started_at: Option<String>,
    /// When inspection finished.
    pub inspection_finished_at: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Allocation using the node.
    pub allocation_uuid: Option<String>,
    /// Shard key.
    pub shard: Option<String>,
    /// Parent node.
    pub parent_node: Option<String>,
    /// Whether power-off is forbidden.
    pub disable_power_off: bool,
    /// When the node was created.
    pub created_at: Option<String>,
    /// When the node last changed.
    pub updated_at: Option<String>,
    /// Links to the node.
    pub links: Vec<Link>,
}

/// A network port of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    /// Port UUID.
    pub uuid: String,
    /// MAC address, lower case, unique.
    pub address: String,
    /// Node the port belongs to.
    pub node_uuid: String,
    /// Portgroup the port belongs to.
    pub portgroup_uuid: Option<String>,
    /// Switch port the NIC is cabled to.
    pub local_link_connection: Map<String, Value>,
    /// Whether the port boots from the network.
    pub pxe_enabled: bool,
    /// Physical network the port is on.
    pub physical_network: Option<String>,
    /// Controller scratch space.
    pub internal_info: Map<String, Value>,
    /// Whether the port is a smart NIC.
    pub is_smartnic: bool,
    /// Port name.
    pub name: Option<String>,
    /// Operator data.
    pub extra: Map<String, Value>,
    /// When the port was created.
    pub created_at: Option<String>,
    /// When the port last changed.
    pub updated_at: Option<String>,
    /// Links to the port.
    pub links: Vec<Link>,
}

/// Reply of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    /// The nodes of this page (full or reduced to the requested fields).
    pub nodes: Vec<Value>,
    /// URL of the next page, when there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Reply of `GET /v1/ports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortList {
    /// The ports of this page.
    pub ports: Vec<Value>,
    /// URL of the next page, when there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Body of `POST /v1/nodes`. Only `driver` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCreate {
    /// Hardware type.
    pub driver: String,
    /// UUID to use instead of a generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Every other writable node field.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// Body of `POST /v1/ports`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortCreate {
    /// MAC address.
    pub address: String,
    /// Node the port belongs to.
    pub node_uuid: String,
    /// UUID to use instead of a generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Every other writable port field.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// Body of `PUT /v1/nodes/{id}/states/provision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// The verb: `manage`, `provide`, `deploy`, `deleted`, ...
    pub target: String,
    /// Config drive, as a string (base64 gzip ISO or URL) or a dict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configdrive: Option<Value>,
    /// Steps for manual cleaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_steps: Option<Vec<Value>>,
    /// Extra deploy steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_steps: Option<Vec<Value>>,
    /// Steps for servicing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_steps: Option<Vec<Value>>,
    /// Password for the rescue user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescue_password: Option<String>,
    /// Whether to skip booting the ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_ramdisk: Option<bool>,
}

/// Body of `PUT /v1/nodes/{id}/states/power`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerRequest {
    /// `power on`, `power off`, `rebooting`, `soft power off`, `soft rebooting`.
    pub target: String,
    /// Seconds to wait for the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// The fault inside an error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// What went wrong.
    pub faultstring: String,
    /// `Client` or `Server`.
    pub faultcode: String,
    /// Extra detail for debugging; normally null.
    pub debuginfo: Option<String>,
}

/// Every controller error reply: `{"error_message": "<JSON of a Fault>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The JSON text of a [`Fault`] (a string, as Ironic clients expect).
    pub error_message: String,
}

impl ErrorBody {
    /// Builds the body for an HTTP status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        let fault = Fault {
            faultstring: message.into(),
            faultcode: if status >= 500 { "Server" } else { "Client" }.to_owned(),
            debuginfo: None,
        };
        // Serializing a struct of strings cannot fail; fall back to the bare text anyway.
        let error_message = serde_json::to_string(&fault).unwrap_or(fault.faultstring);
        Self { error_message }
    }

    /// The human-readable message: the inner `faultstring` or the raw text.
    pub fn message(&self) -> String {
        serde_json::from_str::<Fault>(&self.error_message)
            .map(|f| f.faultstring)
            .unwrap_or_else(|_| self.error_message.clone())
    }
}

/// One API version as the root documents list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDoc {
    /// Always `v1`.
    pub id: String,
    /// Links to the version.
    pub links: Vec<Link>,
    /// `CURRENT`.
    pub status: String,
    /// Lowest microversion.
    pub min_version: String,
    /// Highest microversion.
    pub version: String,
}

impl VersionDoc {
    /// The `v1` document for a controller reachable at `root_url`.
    pub fn current(root_url: &str) -> Self {
        Self {
            id: "v1".to_owned(),
            links: vec![Link::new(format!("{root_url}/v1/"), "self")],
            status: "CURRENT".to_owned(),
            min_version: MIN_VERSION.to_string(),
            version: MAX_VERSION.to_string(),
        }
    }

    /// The highest version, parsed; `None` when the document is malformed.
    pub fn max_version(&self) -> Option<ApiVersion> {
        self.version.parse().ok()
    }
}

/// Reply of the controller's `GET /`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerRoot {
    /// Service name.
    pub name: String,
    /// Service description.
    pub description: String,
    /// The current version.
    pub default_version: VersionDoc,
    /// All versions.
    pub versions: Vec<VersionDoc>,
}

impl ControllerRoot {
    /// The root document for a controller reachable at `root_url`.
    pub fn new(root_url: &str) -> Self {
        let current = VersionDoc::current(root_url);
        Self {
            name: "OpenStack Ironic API".to_owned(),
            description: "Ironic is an OpenStack project which enables the provision and management of baremetal machines. This API is served by Ironclad.".to_owned(),
            default_version: current.clone(),
            versions: vec![current],
        }
    }
}

/// A media type entry in the controller's `GET /v1/` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerMediaType {
    /// Base media type.
    pub base: String,
    /// Vendor media type.
    #[serde(rename = "type")]
    pub media_type: String,
}

/// Reply of the controller's `GET /v1/`: links to the resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerV1 {
    /// Always `v1`.
    pub id: String,
    /// Links to this document and its documentation.
    pub links: Vec<Link>,
    /// Supported media types.
    pub media_types: Vec<ControllerMediaType>,
    /// Links to the node collection.
    pub nodes: Vec<Link>,
    /// Links to the port collection.
    pub ports: Vec<Link>,
    /// Links to the ramdisk lookup (API 1.22 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Vec<Link>>,
    /// Links to the ramdisk heartbeat (API 1.22 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Vec<Link>>,
}

impl ControllerV1 {
    /// The `/v1/` document for a controller at `root_url`; `ramdisk` adds lookup and heartbeat.
    pub fn new(root_url: &str, ramdisk: bool) -> Self {
        let pair = |name: &str| {
            vec![
                Link::new(format!("{root_url}/v1/{name}/"), "self"),
                Link::new(format!("{root_url}/{name}/"), "bookmark"),
            ]
        };
        Self {
            id: "v1".to_owned(),
            links: vec![
                Link::new(format!("{root_url}/v1/"), "self"),
                Link {
                    href: "https://docs.openstack.org/ironic/latest/contributor/webapi.html"
                        .to_owned(),
                    rel: "describedby".to_owned(),
                    media_type: Some("text/html".to_owned()),
                },
            ],
            media_types: vec![ControllerMediaType {
                base: "application/json".to_owned(),
                media_type: "application/vnd.openstack.ironic.v1+json".to_owned(),
            }],
            nodes: pair("nodes"),
            ports: pair("ports"),
            lookup: ramdisk.then(|| pair("lookup")),
            heartbeat: ramdisk.then(|| pair("heartbeat")),
        }
    }
}

/// Reply of `GET /v1/nodes/{id}/states`. Fields newer than the request's version
/// are removed like the node's (see [`crate::microversion::NODE_FIELD_VERSIONS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStates {
    /// Whether the console is enabled.
    pub console_enabled: bool,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// Current power state.
    pub power_state: Option<PowerState>,
    /// Current provision state.
    pub provision_state: Option<ProvisionState>,
    /// When the provision state last changed.
    pub provision_updated_at: Option<String>,
    /// Power state the node is moving to.
    pub target_power_state: Option<PowerState>,
    /// Provision state the node is moving to.
    pub target_provision_state: Option<ProvisionState>,
    /// Current RAID configuration.
    pub raid_config: Map<String, Value>,
    /// Requested RAID configuration.
    pub target_raid_config: Map<String, Value>,
    /// Boot mode.
    pub boot_mode: Option<String>,
    /// Whether secure boot is on.
    pub secure_boot: Option<bool>,
}

impl NodeStates {
    /// The states of `node`.
    pub fn of(node: &Node) -> Self {
        Self {
            console_enabled: node.console_enabled,
            last_error: node.last_error.clone(),
            power_state: node.power_state,
            provision_state: node.provision_state,
            provision_updated_at: node.provision_updated_at.clone(),
            target_power_state: node.target_power_state,
            target_provision_state: node.target_provision_state,
            raid_config: node.raid_config.clone(),
            target_raid_config: node.target_raid_config.clone(),
            boot_mode: node.boot_mode.clone(),
            secure_boot: node.secure_boot,
        }
    }
}

/// The outcome of validating one interface of a node (`GET /v1/nodes/{id}/validate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceValidation {
    /// `true` valid, `false` invalid, `null` when the node has no such interface.
    pub result: Option<bool>,
    /// Why it is invalid or unsupported; absent when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Reply of `GET /v1/nodes/{id}/validate`: one entry per interface kind
/// (`boot`, `console`, `deploy`, `inspect`, `management`, `network`, `power`, ...).
pub type NodeValidation = std::collections::BTreeMap<String, InterfaceValidation>;

/// One hardware type in `GET /v1/drivers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverSummary {
    /// The hardware type's name, e.g. `redfish`.
    pub name: String,
    /// Conductors that serve it.
    pub hosts: Vec<String>,
    /// Always `dynamic` (hardware types, not classic drivers).
    #[serde(rename = "type")]
    pub driver_type: String,
    /// Links to the driver.
    #[serde(default)]
    pub links: Vec<Link>,
}

/// Reply of `GET /v1/drivers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverList {
    /// The enabled hardware types.
    pub drivers: Vec<DriverSummary>,
}

/// Body of `PUT /v1/nodes/{id}/management/boot_device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootDeviceRequest {
    /// `pxe`, `disk`, `cdrom` or `bios`.
    pub boot_device: String,
    /// Every boot (`true`) or the next one only (`false`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

/// Reply of `GET /v1/nodes/{id}/management/boot_device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootDeviceInfo {
    /// The device, or null when the BMC does not say.
    pub boot_device: Option<String>,
    /// Whether it applies to every boot, or null when unknown.
    pub persistent: Option<bool>,
}
