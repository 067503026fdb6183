//! The `ipxe` boot interface and the iPXE scripts the controller serves.
//!
//! Firmware running iPXE fetches `GET /boot.ipxe` (handed out by DHCP), which tries
//! each NIC's MAC in turn with `chain <public url>/ipxe/<mac>`. The per-node
//! script depends on what the node is doing:
//!
//! - deploying, cleaning, inspecting, rescuing or servicing: boot the agent ramdisk
//!   (`driver_info.deploy_kernel`/`deploy_ramdisk`, or `rescue_kernel`/`rescue_ramdisk`
//!   while rescuing) with `ipa-api-url`, `BOOTIF`, `ipa-global-request-id` and
//!   `driver_info.kernel_append_params`;
//! - with an iSCSI boot volume in `instance_info.iscsi_boot`: `sanhook` + `sanboot`;
//! - otherwise: boot the local disk (`sanboot --no-describe --drive 0x80`, then `exit`).
//!
//! An unknown MAC gets a script that boots nothing and exits with an error, so
//! `boot.ipxe` moves on to the next NIC. Kernel and ramdisk given as plain names
//! (not URLs) are served by the controller from its `--http-root` under `/httpboot/`.
//! With a DHCP filter, `prepare_ramdisk` lets the node's MACs boot from the network
//! and the clean-up turns them away again.

use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::ProvisionState;
use serde_json::Value;

use super::{
    info_str, BootInterface, BootTask, DriverError, DriverFuture, DriverSettings, Interface,
};
use crate::dhcp::DhcpFilter;

/// Kernel parameters used when a node has no `driver_info.kernel_append_params`.
pub const DEFAULT_APPEND_PARAMS: &str = "nofb vga=normal";

/// The `ipxe` boot interface.
#[derive(Debug, Clone)]
pub struct Ipxe {
    dhcp: Option<DhcpFilter>,
}

impl Ipxe {
    /// The interface, configured by `settings`.
    pub fn new(settings: &DriverSettings) -> Self {
        Self {
            dhcp: settings.dhcp.clone(),
        }
    }

    fn allow(&self, task: &BootTask<'_>) -> Result<(), DriverError> {
        match &self.dhcp {
            Some(dhcp) => dhcp
                .allow(&task.pxe_macs())
                .map_err(|e| DriverError::Bmc(format!("cannot allow network boot: {e}"))),
            None => Ok(()),
        }
    }

    fn deny(&self, task: &BootTask<'_>) -> Result<(), DriverError> {
        match &self.dhcp {
            Some(dhcp) => dhcp
                .deny(&task.pxe_macs())
                .map_err(|e| DriverError::Bmc(format!("cannot stop network boot: {e}"))),
            None => Ok(()),
        }
    }
}

impl Interface for Ipxe {
    fn name(&self) -> &'static str {
        "ipxe"
    }

    fn validate<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let missing: Vec<&str> = ["deploy_kernel", "deploy_ramdisk"]
                .into_iter()
                .filter(|key| info_str(node, key).is_none())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(DriverError::InvalidParameters(format!(
                    "driver_info is missing {} (URLs, or file names under the controller's --http-root)",
                    missing.join(" and ")
                )))
            }
        })
    }
}

impl BootInterface for Ipxe {
    fn prepare_ramdisk<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.allow(&task) })
    }

    fn clean_up_ramdisk<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.deny(&task) })
    }

    fn prepare_instance<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            if iscsi_boot(task.node).is_some() {
                self.allow(&task)
            } else {
                self.deny(&task)
            }
        })
    }

    fn clean_up_instance<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.deny(&task) })
    }
}

/// Whether a node in `state` boots the agent ramdisk.
pub fn boots_ramdisk(state: ProvisionState) -> bool {
    use ProvisionState::*;
    matches!(
        state,
        Deploying
            | DeployWait
            | Cleaning
            | CleanWait
            | Inspecting
            | InspectWait
            | Rescuing
            | RescueWait
            | Servicing
            | ServiceWait
    )
}

/// An iSCSI boot volume (`instance_info.iscsi_boot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiBoot {
    /// `host:port` or `host` of the target portal.
    pub portal: String,
    /// Target IQN.
    pub target_iqn: String,
    /// LUN.
    pub lun: u64,
    /// Initiator IQN, if set.
    pub initiator_iqn: Option<String>,
    /// CHAP user.
    pub username: Option<String>,
    /// CHAP secret.
    pub password: Option<String>,
}

impl IscsiBoot {
    /// `iscsi:<host>::<port>:<lun in hex>:<iqn>`, as iPXE takes it.
    pub fn url(&self) -> String {
        let (host, port) = match self.portal.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => (host, port),
            _ => (self.portal.as_str(), "3260"),
        };
        format!("iscsi:{host}::{port}:{:x}:{}", self.lun, self.target_iqn)
    }
}

/// The node's iSCSI boot volume, if `instance_info.iscsi_boot` names one.
pub fn iscsi_boot(node: &Node) -> Option<IscsiBoot> {
    let volume = node.instance_info.get("iscsi_boot")?.as_object()?;
    let text = |key: &str| volume.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(IscsiBoot {
        portal: text("target_portal")?,
        target_iqn: text("target_iqn")?,
        lun: volume
            .get("target_lun")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        initiator_iqn: text("initiator_iqn"),
        username: text("auth_username"),
        password: text("auth_password"),
    })
}

/// The generic script DHCP hands to iPXE: tries every NIC's MAC in turn.
pub fn chain_script(public_url: &str) -> String {
    format!(
        "#!ipxe\n\
         # Ironclad: find this machine's script by the MAC of each NIC in turn.\n\
         set netid:int32 -1\n\
         :next_nic\n\
         inc netid\n\
         isset ${{net${{netid}}/mac}} || goto no_node\n\
         chain --autofree {public_url}/ipxe/${{net${{netid}}/mac}} || goto next_nic\n\
         :no_node\n\
         echo Ironclad knows no node with these MACs; booting the next device.\n\
         exit 1\n"
    )
}

/// The script for a MAC no node has: boots nothing.
pub fn unknown_script(mac: &str) -> String {
    format!(
        "#!ipxe\n\
         echo Ironclad: no node has MAC {mac}, or it must not network boot now.\n\
         exit 1\n"
    )
}

/// A kernel/ramdisk reference: a URL as is, a name under `<public url>/httpboot/`.
pub fn image_url(public_url: &str, reference: &str) -> String {
    if reference.contains("://") {
        reference.to_owned()
    } else {
        format!(
            "{public_url}/httpboot/{}",
            reference.trim_start_matches('/')
        )
    }
}

/// The script for a known node, by what it is doing now.
pub fn node_script(node: &Node, public_url: &str, request_id: &str) -> Result<String, String> {
    let state = node.provision_state.unwrap_or(ProvisionState::Available);
    if boots_ramdisk(state) {
        let rescue = matches!(state, ProvisionState::Rescuing | ProvisionState::RescueWait);
        let pick = |primary: &str, fallback: &str| {
            rescue
                .then(|| info_str(node, primary))
                .flatten()
                .or_else(|| info_str(node, fallback))
        };
        let kernel = pick("rescue_kernel", "deploy_kernel")
            .ok_or_else(|| format!("node {} has no driver_info.deploy_kernel", node.uuid))?;
        let ramdisk = pick("rescue_ramdisk", "deploy_ramdisk")
            .ok_or_else(|| format!("node {} has no driver_info.deploy_ramdisk", node.uuid))?;
        let append = info_str(node, "kernel_append_params").unwrap_or(DEFAULT_APPEND_PARAMS);
        let mut args = vec![
            append.to_owned(),
            format!("ipa-api-url={public_url}"),
            format!("ipa-global-request-id={request_id}"),
        ];
        if matches!(
            state,
            ProvisionState::Inspecting | ProvisionState::InspectWait
        ) {
            args.push(format!(
                "ipa-inspection-callback-url={public_url}/v1/continue_inspection"
            ));
            args.push("ipa-collect-lldp=1".to_owned());
        }
        args.push("BOOTIF=${mac}".to_owned());
        args.push("initrd=deploy_ramdisk".to_owned());
        return Ok(deploy_script(
            &image_url(public_url, kernel),
            &image_url(public_url, ramdisk),
            &args.join(" "),
        ));
    }
    if let Some(volume) = iscsi_boot(node) {
        return Ok(iscsi_script(&volume));
    }
    Ok(local_disk_script())
}

fn deploy_script(kernel: &str, ramdisk: &str, args: &str) -> String {
    format!(
        "#!ipxe\n\
         set attempts:int32 10\n\
         set attempt:int32 0\n\
         goto deploy\n\
         \n\
         :deploy\n\
         imgfree\n\
         kernel {kernel} {args} || goto retry\n\
         initrd --name deploy_ramdisk {ramdisk} || goto retry\n\
         boot\n\
         \n\
         :retry\n\
         iseq ${{attempt}} ${{attempts}} && goto fail ||\n\
         inc attempt\n\
         echo Fetching the ramdisk failed; retrying in ${{attempt}} s.\n\
         sleep ${{attempt}}\n\
         goto deploy\n\
         \n\
         :fail\n\
         echo Cannot boot the Ironclad ramdisk; powering off in 30 s.\n\
         sleep 30\n\
         poweroff\n"
    )
}

fn local_disk_script() -> String {
    "#!ipxe\n\
     echo Ironclad: booting the local disk.\n\
     sanboot --no-describe --drive 0x80 || goto exit\n\
     :exit\n\
     exit 0\n"
        .to_owned()
}

fn iscsi_script(volume: &IscsiBoot) -> String {
    let mut script = String::from("#!ipxe\n");
    if let Some(user) = &volume.username {
        script.push_str(&format!("set username {user}\n"));
    }
    if let Some(password) = &volume.password {
        script.push_str(&format!("set password {password}\n"));
    }
    if let Some(iqn) = &volume.initiator_iqn {
        script.push_str(&format!("set initiator-iqn {iqn}\n"));
    }
    script.push_str(&format!(
        ":boot_iscsi\n\
         sanhook --drive 0x80 {} || goto fail_iscsi_retry\n\
         sanboot --no-describe || goto fail_iscsi_retry\n\
         \n\
         :fail_iscsi_retry\n\
         echo Failed to attach the iSCSI volume; retrying in 10 s.\n\
         sleep 10\n\
         goto boot_iscsi\n",
        volume.url()
    ));
    script
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn iscsi_urls_follow_ipxe_syntax() {
        let volume = IscsiBoot {
            portal: "10.0.0.9:3261".to_owned(),
            target_iqn: "iqn.2026-11.test:vol".to_owned(),
            lun: 10,
            initiator_iqn: None,
            username: None,
            password: None,
        };
        assert_eq!(volume.url(), "iscsi:10.0.0.9::3261:a:iqn.2026-11.test:vol");
        assert_eq!(
            image_url("http://c", "agent.kernel"),
            "http://c/httpboot/agent.kernel"
        );
        assert_eq!(image_url("http://c", "https://x/k"), "https://x/k");
    }
}
