//! The `redfish-virtual-media` boot interface: the agent's ISO (the image
//! builder's, named by `driver_info.deploy_iso`: a URL or a file under
//! `--http-root`) is inserted into the BMC's virtual CD, and the conductor boots
//! the node from `cdrom` once. Clean-up and instance preparation eject it.
//!
//! The virtual CD is looked up under the System (newer BMCs, sushy-tools 2) and
//! then under the Managers; it is the first medium whose `MediaTypes` has `CD`
//! or `DVD`. Insert and eject use the `InsertMedia`/`EjectMedia` actions, or
//! PATCH `Image`/`Inserted` when a BMC has no actions.

use std::sync::Arc;

use ironclad_versioning::controller_api::Node;
use serde_json::{json, Value};

use super::client::Connection;
use super::Redfish;
use crate::drivers::ipxe::image_url;
use crate::drivers::{
    info_str, BootDevice, BootInterface, BootTask, DriverError, DriverFuture, Interface,
};

/// The `redfish-virtual-media` boot interface.
#[derive(Debug)]
pub struct RedfishVirtualMedia {
    redfish: Arc<Redfish>,
    public_url: String,
}

impl RedfishVirtualMedia {
    /// The interface, sharing `redfish`'s connections.
    pub fn new(redfish: Arc<Redfish>, public_url: &str) -> Self {
        Self {
            redfish,
            public_url: public_url.to_owned(),
        }
    }

    fn iso(&self, node: &Node) -> Result<String, DriverError> {
        info_str(node, "deploy_iso")
            .map(|iso| image_url(&self.public_url, iso))
            .ok_or_else(|| {
                DriverError::InvalidParameters(
                    "driver_info is missing deploy_iso (the agent ISO: a URL, or a file name under the controller's --http-root)"
                        .to_owned(),
                )
            })
    }

    async fn cd(&self, node: &Node) -> Result<(Arc<Connection>, Value), DriverError> {
        let (connection, _, system) = self.redfish.system(node).await?;
        let mut collections: Vec<String> = system
            .body
            .pointer("/VirtualMedia/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect();
        for manager in system
            .body
            .pointer("/Links/ManagedBy")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(path) = manager.get("@odata.id").and_then(Value::as_str) {
                if let Ok(found) = connection.get(path).await {
                    if let Some(media) = found
                        .body
                        .pointer("/VirtualMedia/@odata.id")
                        .and_then(Value::as_str)
                    {
                        collections.push(media.to_owned());
                    }
                }
            }
        }
        for collection in collections {
            let Ok(list) = connection.get(&collection).await else {
                continue;
            };
            for member in super::members(&list.body) {
                let medium = connection.get(&member).await?.body;
                let is_cd = medium
                    .get("MediaTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|types| {
                        types
                            .iter()
                            .any(|t| matches!(t.as_str(), Some("CD" | "DVD")))
                    });
                if is_cd {
                    return Ok((connection, medium));
                }
            }
        }
        Err(DriverError::Unsupported(format!(
            "the BMC at {} offers no virtual CD/DVD",
            connection.info().base
        )))
    }

    async fn eject(&self, node: &Node) -> Result<(), DriverError> {
        let (connection, medium) = self.cd(node).await?;
        if medium.get("Inserted").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let path = medium_path(&medium)?;
        match medium
            .pointer("/Actions/#VirtualMedia.EjectMedia/target")
            .and_then(Value::as_str)
        {
            Some(target) => connection.post(target, json!({})).await?,
            None => {
                connection
                    .patch(&path, json!({"Image": null, "Inserted": false}), None)
                    .await?
            }
        };
        tracing::info!(node = %node.uuid, medium = %path, "virtual media ejected");
        Ok(())
    }

    async fn insert(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        self.eject(node).await?;
        let (connection, medium) = self.cd(node).await?;
        let path = medium_path(&medium)?;
        match medium
            .pointer("/Actions/#VirtualMedia.InsertMedia/target")
            .and_then(Value::as_str)
        {
            Some(target) => {
                connection
                    .post(
                        target,
                        json!({"Image": image, "Inserted": true, "WriteProtected": true}),
                    )
                    .await?
            }
            None => {
                connection
                    .patch(
                        &path,
                        json!({"Image": image, "Inserted": true, "WriteProtected": true}),
                        None,
                    )
                    .await?
            }
        };
        tracing::info!(node = %node.uuid, medium = %path, image, "virtual media inserted");
        Ok(())
    }
}

fn medium_path(medium: &Value) -> Result<String, DriverError> {
    medium
        .get("@odata.id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| DriverError::Bmc("a virtual medium has no @odata.id".to_owned()))
}

impl Interface for RedfishVirtualMedia {
    fn name(&self) -> &'static str {
        "redfish-virtual-media"
    }

    fn validate<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            super::info::RedfishInfo::parse(node)?;
            self.iso(node).map(|_| ())
        })
    }
}

impl BootInterface for RedfishVirtualMedia {
    fn prepare_ramdisk<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let iso = self.iso(task.node)?;
            self.insert(task.node, &iso).await
        })
    }

    fn clean_up_ramdisk<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.eject(task.node).await })
    }

    fn prepare_instance<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.eject(task.node).await })
    }

    fn clean_up_instance<'a>(&'a self, _task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(async move { Ok(()) })
    }

    fn ramdisk_boot_device(&self) -> BootDevice {
        BootDevice::Cdrom
    }
}
