//! IPMI over LAN (`ipmitool` power and management) with `ipmitool` as the transport.
//!
//! `driver_info`: `ipmi_address` (required), `ipmi_port` (623), `ipmi_username`,
//! `ipmi_password` (handed to ipmitool in the environment, never on the command
//! line), `ipmi_protocol_version` (`2.0` → `-I lanplus`, the default; `1.5` → `-I lan`),
//! `ipmi_cipher_suite` (`-C`; BMCs without cipher suite discovery, such as
//! OpenIPMI's `ipmi_sim`, need it to avoid seconds of discovery retries).

use std::time::{Duration, Instant};

use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::{PowerState, PowerTarget};
use tokio::process::Command;

use super::{
    info_str, BootDevice, BootMode, DriverError, DriverFuture, DriverSettings, Interface,
    ManagementInterface, PowerInterface,
};

/// The `ipmitool` power and management interfaces.
#[derive(Debug, Clone)]
pub struct Ipmitool {
    program: String,
    power_timeout: Duration,
}

/// Connection settings read from `driver_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiInfo {
    /// BMC host.
    pub address: String,
    /// UDP port.
    pub port: u16,
    /// User, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// `lanplus` or `lan`.
    pub interface: &'static str,
    /// RMCP+ cipher suite (`-C`), when set; ipmitool discovers one otherwise.
    pub cipher_suite: Option<u8>,
}

impl IpmiInfo {
    /// Parses the node's `driver_info`.
    pub fn parse(node: &Node) -> Result<Self, DriverError> {
        let address = info_str(node, "ipmi_address").ok_or_else(|| {
            DriverError::InvalidParameters(
                "driver_info is missing ipmi_address (the BMC's host name or IP)".to_owned(),
            )
        })?;
        let port = match node.driver_info.get("ipmi_port") {
            None | Some(serde_json::Value::Null) => 623,
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    DriverError::InvalidParameters(format!(
                        "driver_info.ipmi_port {value} is not a port number"
                    ))
                })?,
        };
        let interface = match info_str(node, "ipmi_protocol_version").unwrap_or("2.0") {
            "2.0" => "lanplus",
            "1.5" => "lan",
            other => {
                return Err(DriverError::InvalidParameters(format!(
                    "driver_info.ipmi_protocol_version {other:?} is not 1.5 or 2.0"
                )))
            }
        };
        let cipher_suite = match node.driver_info.get("ipmi_cipher_suite") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|c| *c <= 17)
                    .ok_or_else(|| {
                        DriverError::InvalidParameters(format!(
                            "driver_info.ipmi_cipher_suite {value} is not a cipher suite number (0-17)"
                        ))
                    })?,
            ),
        };
        Ok(Self {
            cipher_suite,
            address: address.to_owned(),
            port,
            username: info_str(node, "ipmi_username").map(str::to_owned),
            password: info_str(node, "ipmi_password").map(str::to_owned),
            interface,
        })
    }
}

impl Ipmitool {
    /// The interfaces, configured by `settings`.
    pub fn new(settings: &DriverSettings) -> Self {
        Self {
            program: std::env::var("IRONCLAD_IPMITOOL").unwrap_or_else(|_| "ipmitool".to_owned()),
            power_timeout: settings.power_state_change_timeout,
        }
    }

    async fn run(&self, info: &IpmiInfo, args: &[&str]) -> Result<String, DriverError> {
        let mut command = Command::new(&self.program);
        command
            .arg("-I")
            .arg(info.interface)
            .arg("-H")
            .arg(&info.address)
            .arg("-p")
            .arg(info.port.to_string())
            .args(["-R", "3", "-N", "2"]);
        if let Some(suite) = info.cipher_suite {
            command.arg("-C").arg(suite.to_string());
        }
        if let Some(user) = &info.username {
            command.arg("-U").arg(user);
        }
        if let Some(password) = &info.password {
            command.arg("-E").env("IPMI_PASSWORD", password);
        }
        command.args(args).kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .map_err(|_| {
                DriverError::Bmc(format!("ipmitool {} timed out after 60 s", args.join(" ")))
            })?
            .map_err(|e| {
                DriverError::Bmc(format!(
                    "cannot run {}: {e}; install the ipmitool package",
                    self.program
                ))
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let hint = if stderr.contains("Unable to establish") {
                " (no session: check driver_info.ipmi_address, ipmi_port, ipmi_username and ipmi_password)"
            } else {
                ""
            };
            return Err(DriverError::Bmc(format!(
                "ipmitool {} against {}:{} failed: {}{hint}",
                args.join(" "),
                info.address,
                info.port,
                stderr.trim().lines().last().unwrap_or("")
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn power_status(&self, info: &IpmiInfo) -> Result<PowerState, DriverError> {
        let text = self.run(info, &["power", "status"]).await?;
        parse_power(&text)
    }
}

/// Parses `Chassis Power is on|off`.
pub fn parse_power(text: &str) -> Result<PowerState, DriverError> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("power is on") {
        Ok(PowerState::On)
    } else if lower.contains("power is off") {
        Ok(PowerState::Off)
    } else {
        Err(DriverError::Bmc(format!(
            "unexpected ipmitool power status output {:?}",
            text.trim()
        )))
    }
}

impl Interface for Ipmitool {
    fn name(&self) -> &'static str {
        "ipmitool"
    }

    fn validate<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, ()> {
        Box::pin(async move { IpmiInfo::parse(node).map(|_| ()) })
    }
}

impl PowerInterface for Ipmitool {
    fn get_power_state<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, PowerState> {
        Box::pin(async move { self.power_status(&IpmiInfo::parse(node)?).await })
    }

    fn set_power_state<'a>(
        &'a self,
        node: &'a Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> DriverFuture<'a, PowerState> {
        Box::pin(async move {
            let info = IpmiInfo::parse(node)?;
            let timeout = timeout.unwrap_or(self.power_timeout);
            let (verb, goal) = match target {
                PowerTarget::On => ("on", PowerState::On),
                PowerTarget::Off => ("off", PowerState::Off),
                PowerTarget::SoftOff => ("soft", PowerState::Off),
                PowerTarget::Rebooting | PowerTarget::SoftRebooting => {
                    // As Ironic: off (hard or soft), then on.
                    let off = if target == PowerTarget::Rebooting {
                        "off"
                    } else {
                        "soft"
                    };
                    if self.power_status(&info).await? == PowerState::On {
                        self.run(&info, &["power", off]).await?;
                        self.wait_for(&info, PowerState::Off, timeout).await?;
                    }
                    ("on", PowerState::On)
                }
            };
            self.run(&info, &["power", verb]).await?;
            self.wait_for(&info, goal, timeout).await
        })
    }
}

impl Ipmitool {
    async fn wait_for(
        &self,
        info: &IpmiInfo,
        goal: PowerState,
        timeout: Duration,
    ) -> Result<PowerState, DriverError> {
        let started = Instant::now();
        loop {
            let now = self.power_status(info).await?;
            if now == goal {
                return Ok(now);
            }
            if started.elapsed() >= timeout {
                return Err(DriverError::Bmc(format!(
                    "the BMC at {} still reports {now} after {} s (wanted {goal})",
                    info.address,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl ManagementInterface for Ipmitool {
    fn set_boot_device<'a>(
        &'a self,
        node: &'a Node,
        device: BootDevice,
        persistent: bool,
    ) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let info = IpmiInfo::parse(node)?;
            let name = match device {
                BootDevice::Pxe => "pxe",
                BootDevice::Disk => "disk",
                BootDevice::Cdrom => "cdrom",
                BootDevice::Bios => "bios",
            };
            let mut options = Vec::new();
            if persistent {
                options.push("persistent");
            }
            if node.boot_mode.as_deref() == Some("uefi")
                || node
                    .properties
                    .get("capabilities")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|c| c.contains("boot_mode:uefi"))
            {
                options.push("efiboot");
            }
            let joined = format!("options={}", options.join(","));
            let mut args = vec!["chassis", "bootdev", name];
            if !options.is_empty() {
                args.push(&joined);
            }
            self.run(&info, &args).await.map(|_| ())
        })
    }

    fn get_boot_device<'a>(
        &'a self,
        node: &'a Node,
    ) -> DriverFuture<'a, (Option<BootDevice>, Option<bool>)> {
        Box::pin(async move {
            let info = IpmiInfo::parse(node)?;
            let text = self
                .run(&info, &["chassis", "bootparam", "get", "5"])
                .await?;
            let lower = text.to_ascii_lowercase();
            let device = if lower.contains("force pxe") {
                Some(BootDevice::Pxe)
            } else if lower.contains("force boot from default hard-drive") {
                Some(BootDevice::Disk)
            } else if lower.contains("cd/dvd") {
                Some(BootDevice::Cdrom)
            } else if lower.contains("bios setup") {
                Some(BootDevice::Bios)
            } else {
                None
            };
            let persistent = lower
                .contains("options apply to all future boots")
                .then_some(true)
                .or_else(|| {
                    lower
                        .contains("options apply to only next boot")
                        .then_some(false)
                });
            Ok((device, persistent))
        })
    }

    fn set_boot_mode<'a>(&'a self, _node: &'a Node, _mode: BootMode) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            Err(DriverError::Unsupported(
                "IPMI cannot change the firmware boot mode; set it in the firmware setup"
                    .to_owned(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn power_output_is_parsed() {
        assert_eq!(
            parse_power("Chassis Power is on\n").unwrap(),
            PowerState::On
        );
        assert_eq!(
            parse_power("Chassis Power is off").unwrap(),
            PowerState::Off
        );
        assert!(parse_power("Error").is_err());
    }
}
