//! The `redfish` power, management and inspect interfaces.
//!
//! - [`info`]: `driver_info` (`redfish_address`, `redfish_system_id`,
//!   `redfish_username`, `redfish_password`, `redfish_verify_ca`, `redfish_auth_type`);
//! - [`client`]: HTTP, authentication, retries and error messages;
//! - [`quirks`]: vendor differences, in one place.
//!
//! Power follows Ironic: `On`, `ForceOff`, `GracefulShutdown`; a reboot is an
//! off (hard or graceful) followed by `On`, each waited for, because many BMCs
//! drop boot overrides on a warm restart. Boot devices map pxe↔`Pxe`,
//! disk↔`Hdd`, cdrom↔`Cd`, bios↔`BiosSetup`; modes uefi↔`UEFI`, bios↔`Legacy`.

pub mod client;
pub mod info;
pub mod quirks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::{PowerState, PowerTarget};
use serde_json::{json, Map, Value};

use super::{
    BootDevice, BootMode, DriverError, DriverFuture, DriverSettings, InspectInterface,
    InspectedHardware, Interface, ManagementInterface, PowerInterface,
};
use client::{Connection, Connections, RedfishError, Retry};
use info::RedfishInfo;

/// The Redfish interfaces (one object serves power, management and inspect).
#[derive(Debug)]
pub struct Redfish {
    connections: Connections,
    retry: Retry,
    power_timeout: Duration,
    poll: Duration,
}

impl From<RedfishError> for DriverError {
    fn from(error: RedfishError) -> Self {
        DriverError::Bmc(error.to_string())
    }
}

/// Ironic's boot device ↔ Redfish `BootSourceOverrideTarget`.
pub fn redfish_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::Bios => "BiosSetup",
    }
}

fn device_of(target: &str) -> Option<BootDevice> {
    match target {
        "Pxe" => Some(BootDevice::Pxe),
        "Hdd" => Some(BootDevice::Disk),
        "Cd" | "UsbCd" => Some(BootDevice::Cdrom),
        "BiosSetup" => Some(BootDevice::Bios),
        _ => None,
    }
}

/// Maps `PowerState` of a ComputerSystem to Ironic's state.
pub fn power_of(system: &Value) -> Option<PowerState> {
    match system.get("PowerState").and_then(Value::as_str)? {
        "On" | "PoweringOn" => Some(PowerState::On),
        "Off" | "PoweringOff" => Some(PowerState::Off),
        _ => None,
    }
}

/// The boot mode the node asks for in `properties.capabilities` (`boot_mode:uefi`)
/// or `boot_mode`, as Redfish names it.
fn wanted_mode(node: &Node) -> Option<&'static str> {
    let from_caps = node
        .properties
        .get("capabilities")
        .and_then(Value::as_str)
        .and_then(|caps| {
            caps.split(',')
                .find_map(|c| c.trim().strip_prefix("boot_mode:"))
        });
    match from_caps.or(node.boot_mode.as_deref()) {
        Some("uefi") => Some("UEFI"),
        Some("bios") => Some("Legacy"),
        _ => None,
    }
}

impl Redfish {
    /// The interfaces, configured by `settings`.
    pub fn new(settings: &DriverSettings) -> Self {
        Self {
            connections: Connections::default(),
            retry: Retry {
                attempts: settings.redfish_attempts,
                interval: settings.redfish_retry_interval,
            },
            power_timeout: settings.power_state_change_timeout,
            poll: Duration::from_millis(500),
        }
    }

    fn connect(&self, node: &Node) -> Result<(Arc<Connection>, RedfishInfo), DriverError> {
        let info = RedfishInfo::parse(node)?;
        let connection = self.connections.get(&info, self.retry)?;
        Ok((connection, info))
    }

    /// The system's path: `redfish_system_id`, or the only member of `Systems`.
    async fn system_path(&self, connection: &Connection) -> Result<String, DriverError> {
        if let Some(path) = &connection.info().system {
            return Ok(path.clone());
        }
        let root = connection.info().root.clone();
        let service = connection.get(&root).await?;
        let systems = service
            .body
            .pointer("/Systems/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{root}/Systems"));
        let list = connection.get(&systems).await?;
        let members: Vec<String> = list
            .body
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|i| i.get("@odata.id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        match members.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(DriverError::Bmc(format!(
                "the BMC at {} lists no systems",
                connection.info().base
            ))),
            many => Err(DriverError::InvalidParameters(format!(
                "the BMC at {} has {} systems; set driver_info.redfish_system_id to one of: {}",
                connection.info().base,
                many.len(),
                many.join(", ")
            ))),
        }
    }

    async fn system(
        &self,
        node: &Node,
    ) -> Result<(Arc<Connection>, String, client::Reply), DriverError> {
        let (connection, _) = self.connect(node)?;
        let path = self.system_path(&connection).await?;
        let reply = connection.get(&path).await.map_err(|e| match e {
            RedfishError::Status { status: 404, .. } => DriverError::InvalidParameters(format!(
                "the BMC at {} has no system {path}; check driver_info.redfish_system_id",
                connection.info().base
            )),
            other => other.into(),
        })?;
        Ok((connection, path, reply))
    }

    async fn reset(
        &self,
        connection: &Connection,
        system: &Value,
        path: &str,
        reset_type: &str,
    ) -> Result<(), DriverError> {
        let action = system.pointer("/Actions/#ComputerSystem.Reset");
        let target = action
            .and_then(|a| a.get("target"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        if let Some(action) = action {
            quirks::check_allowed(action, "ResetType", reset_type).map_err(|allowed| {
                DriverError::Unsupported(format!(
                    "the BMC does not offer reset type {reset_type}; it offers {}",
                    allowed.join(", ")
                ))
            })?;
        }
        let mut conflicts = 0;
        loop {
            match connection
                .post(&target, json!({ "ResetType": reset_type }))
                .await
            {
                Ok(_) => return Ok(()),
                Err(error)
                    if reset_type == "On"
                        && quirks::power_on_conflict(error.status())
                        && conflicts < 6 =>
                {
                    conflicts += 1;
                    tracing::warn!(%error, "power on refused with a conflict; retrying");
                    tokio::time::sleep(self.retry.interval).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn wait_for(
        &self,
        connection: &Connection,
        path: &str,
        goal: PowerState,
        timeout: Duration,
    ) -> Result<PowerState, DriverError> {
        let started = Instant::now();
        loop {
            let system = connection.get(path).await?;
            let now = power_of(&system.body);
            if now == Some(goal) {
                return Ok(goal);
            }
            if started.elapsed() >= timeout {
                return Err(DriverError::Bmc(format!(
                    "{path} still reports power state {} {} s after the request (wanted {goal}); check the machine",
                    system.body.get("PowerState").unwrap_or(&Value::Null),
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn set_boot(
        &self,
        node: &Node,
        target: Option<&str>,
        persistent: bool,
        mode: Option<&str>,
    ) -> Result<(), DriverError> {
        let (connection, path, system) = self.system(node).await?;
        let body = &system.body;
        let boot = body.get("Boot").cloned().unwrap_or(Value::Null);
        let patch = match target {
            Some(target) => {
                quirks::check_allowed(&boot, "BootSourceOverrideTarget", target).map_err(
                    |allowed| {
                        DriverError::Unsupported(format!(
                            "the BMC cannot boot from {target}; it offers {}",
                            allowed.join(", ")
                        ))
                    },
                )?;
                let enabled = if persistent { "Continuous" } else { "Once" };
                quirks::boot_patch(body, target, enabled, mode)
            }
            None => json!({"Boot": {"BootSourceOverrideMode": mode}}),
        };
        match connection.patch(&path, patch, system.etag.as_deref()).await {
            Ok(_) => Ok(()),
            Err(error)
                if persistent && target.is_some() && quirks::persistent_refused(error.status()) =>
            {
                tracing::warn!(node = %node.uuid, %error, "the BMC refused a persistent boot override; setting it once instead");
                let retry = quirks::boot_patch(body, target.unwrap_or("Hdd"), "Once", mode);
                let again = connection.get(&path).await?;
                connection
                    .patch(&path, retry, again.etag.as_deref())
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl Interface for Redfish {
    fn name(&self) -> &'static str {
        "redfish"
    }

    fn validate<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, ()> {
        Box::pin(async move { RedfishInfo::parse(node).map(|_| ()) })
    }
}

impl PowerInterface for Redfish {
    fn get_power_state<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, PowerState> {
        Box::pin(async move {
            let (_, path, system) = self.system(node).await?;
            power_of(&system.body).ok_or_else(|| {
                DriverError::Bmc(format!(
                    "{path} reports an unknown power state {}",
                    system.body.get("PowerState").unwrap_or(&Value::Null)
                ))
            })
        })
    }

    fn set_power_state<'a>(
        &'a self,
        node: &'a Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> DriverFuture<'a, PowerState> {
        Box::pin(async move {
            let timeout = timeout.unwrap_or(self.power_timeout);
            let (connection, path, system) = self.system(node).await?;
            let current = power_of(&system.body);
            let (off_type, then_on) = match target {
                PowerTarget::On => {
                    if current != Some(PowerState::On) {
                        self.reset(&connection, &system.body, &path, "On").await?;
                    }
                    return self
                        .wait_for(&connection, &path, PowerState::On, timeout)
                        .await;
                }
                PowerTarget::Off => ("ForceOff", false),
                PowerTarget::SoftOff => ("GracefulShutdown", false),
                PowerTarget::Rebooting => ("ForceOff", true),
                PowerTarget::SoftRebooting => ("GracefulShutdown", true),
            };
            if current != Some(PowerState::Off) {
                self.reset(&connection, &system.body, &path, off_type)
                    .await?;
                self.wait_for(&connection, &path, PowerState::Off, timeout)
                    .await?;
            }
            if !then_on {
                return Ok(PowerState::Off);
            }
            self.reset(&connection, &system.body, &path, "On").await?;
            self.wait_for(&connection, &path, PowerState::On, timeout)
                .await
        })
    }
}

impl ManagementInterface for Redfish {
    fn set_boot_device<'a>(
        &'a self,
        node: &'a Node,
        device: BootDevice,
        persistent: bool,
    ) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.set_boot(
                node,
                Some(redfish_target(device)),
                persistent,
                wanted_mode(node),
            )
            .await
        })
    }

    fn get_boot_device<'a>(
        &'a self,
        node: &'a Node,
    ) -> DriverFuture<'a, (Option<BootDevice>, Option<bool>)> {
        Box::pin(async move {
            let (_, _, system) = self.system(node).await?;
            let boot = system.body.get("Boot").cloned().unwrap_or(Value::Null);
            let device = boot
                .get("BootSourceOverrideTarget")
                .and_then(Value::as_str)
                .and_then(device_of);
            let persistent = match boot
                .get("BootSourceOverrideEnabled")
                .and_then(Value::as_str)
            {
                Some("Continuous") => Some(true),
                Some("Once") => Some(false),
                _ => None,
            };
            Ok((device, persistent))
        })
    }

    fn set_boot_mode<'a>(&'a self, node: &'a Node, mode: BootMode) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let name = match mode {
                BootMode::Uefi => "UEFI",
                BootMode::Bios => "Legacy",
            };
            self.set_boot(node, None, false, Some(name)).await
        })
    }
}

impl InspectInterface for Redfish {
    fn inspect_hardware<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, InspectedHardware> {
        Box::pin(async move {
            let (connection, _, system) = self.system(node).await?;
            read_inventory(&connection, &system.body).await
        })
    }
}

fn members(body: &Value) -> Vec<String> {
    body.get("Members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|i| i.get("@odata.id").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn collection(connection: &Connection, system: &Value, key: &str) -> Vec<Value> {
    let Some(path) = system
        .pointer(&format!("/{key}/@odata.id"))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let Ok(list) = connection.get(path).await else {
        return Vec::new();
    };
    let mut items = Vec::new();
    for member in members(&list.body) {
        if let Ok(item) = connection.get(&member).await {
            items.push(item.body);
        }
    }
    items
}

/// Reads memory, CPUs, architecture, disks, NICs and boot mode of a system.
pub async fn read_inventory(
    connection: &Connection,
    system: &Value,
) -> Result<InspectedHardware, DriverError> {
    let mut properties = Map::new();
    if let Some(gib) = system
        .pointer("/MemorySummary/TotalSystemMemoryGiB")
        .and_then(Value::as_f64)
    {
        properties.insert("memory_mb".to_owned(), json!((gib * 1024.0).round() as u64));
    }
    let processors = collection(connection, system, "Processors").await;
    let cpus = system
        .pointer("/ProcessorSummary/Count")
        .and_then(Value::as_u64)
        .or_else(|| (!processors.is_empty()).then_some(processors.len() as u64));
    if let Some(cpus) = cpus {
        properties.insert("cpus".to_owned(), json!(cpus));
    }
    let arch = processors.iter().find_map(|p| {
        p.get("InstructionSet")
            .or_else(|| p.get("ProcessorArchitecture"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if let Some(arch) = arch {
        let mapped = match arch.as_str() {
            "x86-64" | "x86" => "x86_64",
            "ARM-A64" | "ARM" => "aarch64",
            "PowerISA" | "Power" => "ppc64le",
            other => other,
        };
        properties.insert("cpu_arch".to_owned(), json!(mapped));
    }
    let mut largest: u64 = 0;
    for storage in collection(connection, system, "SimpleStorage").await {
        for device in storage
            .get("Devices")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            largest = largest.max(
                device
                    .get("CapacityBytes")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
        }
    }
    if largest > 0 {
        properties.insert("local_gb".to_owned(), json!(largest / (1 << 30)));
    }
    match system
        .pointer("/Boot/BootSourceOverrideMode")
        .and_then(Value::as_str)
    {
        Some("UEFI") => {
            properties.insert("capabilities".to_owned(), json!("boot_mode:uefi"));
        }
        Some("Legacy") => {
            properties.insert("capabilities".to_owned(), json!("boot_mode:bios"));
        }
        _ => {}
    }
    for (key, field) in [
        ("vendor", "Manufacturer"),
        ("model", "Model"),
        ("serial", "SerialNumber"),
    ] {
        if let Some(value) = system.get(field).and_then(Value::as_str) {
            properties.insert(key.to_owned(), json!(value));
        }
    }
    let macs = collection(connection, system, "EthernetInterfaces")
        .await
        .iter()
        .filter_map(|nic| {
            nic.get("MACAddress")
                .or_else(|| nic.get("PermanentMACAddress"))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        })
        .collect();
    Ok(InspectedHardware { properties, macs })
}
