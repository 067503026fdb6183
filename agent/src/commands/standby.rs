//! The `standby` extension: write an image, report its root UUID, sync disks,
//! power off or reboot.

use std::sync::Arc;

use ironclad_versioning::agent_api::{AgentErrorKind, CommandError};
use ironclad_versioning::image_info::{ExpectedChecksum, ImageInfo};
use serde_json::{json, Map, Value};

use super::{check_kwargs, AgentContext, ExecuteError, Prepared};
use crate::disk::{choose_root_device, root_device_hints, BlockDevice, DiskError};
use crate::image::mbr_disk_signature;
use crate::power::PowerAction;

/// Prepares a `standby.*` command.
pub fn prepare(
    ctx: &Arc<AgentContext>,
    command: &str,
    params: Map<String, Value>,
) -> Result<Prepared, ExecuteError> {
    let ctx = ctx.clone();
    match command {
        "prepare_image" => {
            if let Err(e) = check_kwargs(command, &params, &[], &["image_info", "configdrive"]) {
                return Ok(Prepared::failed(e));
            }
            let image_info = params.get("image_info").cloned().unwrap_or(Value::Null);
            let configdrive = params.get("configdrive").cloned().unwrap_or(Value::Null);
            let (info, expected) = validate_image(&ctx, &image_info, &configdrive)
                .map_err(ExecuteError::InvalidParams)?;
            Ok(Prepared::background(async move {
                write_image(&ctx, &info, &expected).await.map(Value::String)
            }))
        }
        "get_partition_uuids" => Ok(match check_kwargs(command, &params, &[], &[]) {
            Err(e) => Prepared::failed(e),
            Ok(()) => Prepared::sync(async move { partition_uuids(&ctx) }),
        }),
        "sync" => Ok(match check_kwargs(command, &params, &[], &[]) {
            Err(e) => Prepared::failed(e),
            Ok(()) => Prepared::sync(async move {
                let c = ctx.clone();
                blocking(move || sync_disks(&c)).await?;
                Ok(Value::Null)
            }),
        }),
        "power_off" | "run_image" => {
            let action = if command == "power_off" {
                PowerAction::PowerOff
            } else {
                PowerAction::Reboot
            };
            Ok(match check_kwargs(command, &params, &[], &[]) {
                Err(e) => Prepared::failed(e),
                Ok(()) => Prepared::background(async move {
                    let c = ctx.clone();
                    blocking(move || {
                        sync_disks(&c)?;
                        c.power.execute(action).map_err(|e| {
                            CommandError::new(AgentErrorKind::SystemRebootError, e.to_string())
                        })
                    })
                    .await?;
                    Ok(Value::Null)
                }),
            })
        }
        other => Err(ExecuteError::UnknownCommand(other.to_owned())),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        CommandError::new(
            AgentErrorKind::CommandExecutionError,
            format!("worker failed: {e}"),
        )
    })?
}

/// Validates `image_info` (and `configdrive`) before a write starts.
pub fn validate_image(
    ctx: &AgentContext,
    image_info: &Value,
    configdrive: &Value,
) -> Result<(ImageInfo, ExpectedChecksum), String> {
    if image_info.is_null() {
        return Err("image_info is required".to_owned());
    }
    let info: ImageInfo = serde_json::from_value(image_info.clone())
        .map_err(|e| format!("image_info is malformed: {e}"))?;
    let expected = info
        .expected_checksum(ctx.md5_allowed())
        .map_err(|e| e.to_string())?;
    let has_configdrive = |v: &Value| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    };
    if has_configdrive(configdrive) || info.configdrive.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err("a config drive was given but this agent cannot write config drives yet; deploy without one (or use network metadata)".to_owned());
    }
    if info.is_partition_image() {
        return Err(
            "partition images are not supported by this agent yet; use a whole-disk image"
                .to_owned(),
        );
    }
    if let Some(format) = info.disk_format.as_deref() {
        // The bytes decide; the declared format is checked against them later.
        // Formats no image of this agent can ever match are refused here.
        let known = ["", "raw", "gpt", "qcow2", "unknown"];
        if !known.contains(&format.trim()) {
            return Err(format!(
                "disk_format {format:?} is not supported by this agent; use raw or qcow2 (optionally gzip, xz, zstd or bzip2 compressed)"
            ));
        }
    }
    Ok((info, expected))
}

fn device_error(e: DiskError) -> CommandError {
    CommandError::new(AgentErrorKind::DeviceNotFound, e.to_string())
}

/// Chooses the root device for the node (hints, else smallest disk of at least 4 GiB).
pub fn root_device(ctx: &AgentContext) -> Result<BlockDevice, CommandError> {
    let devices = ctx.disks.list().map_err(device_error)?;
    let hints = match &ctx.node {
        Some(node) => {
            root_device_hints(&node.instance_info, &node.properties).map_err(device_error)?
        }
        None => None,
    };
    choose_root_device(&devices, hints.as_ref()).map_err(device_error)
}

/// Downloads and writes a whole-disk image to the root device; returns IPA's message.
pub async fn write_image(
    ctx: &Arc<AgentContext>,
    info: &ImageInfo,
    expected: &ExpectedChecksum,
) -> Result<String, CommandError> {
    let c = ctx.clone();
    let device = blocking(move || root_device(&c)).await?;
    tracing::info!(
        "root device for image {}: {} ({} bytes)",
        info.id,
        device.name,
        device.size
    );
    let err = |e: crate::image::ImageError| CommandError::new(e.kind(), e.to_string());
    let (algorithm, hex) = ctx
        .image_writer
        .resolve_checksum(info, expected, ctx.md5_allowed())
        .await
        .map_err(err)?;
    ctx.image_writer
        .write_whole_disk(
            info,
            algorithm,
            &hex,
            &device,
            ctx.lookup_config.permitted_image_formats.as_deref(),
        )
        .await
        .map_err(err)?;
    *ctx.written_device.lock().unwrap_or_else(|e| e.into_inner()) = Some(device.path.clone());
    let path = device.path.clone();
    let root_uuid = blocking(move || {
        mbr_disk_signature(&path).map_err(|e| {
            CommandError::new(
                AgentErrorKind::ImageWriteError,
                format!("reading back the disk signature of {}: {e}", path.display()),
            )
        })
    })
    .await?;
    Ok(format!(
        "image ({}) written to device {} root_uuid={root_uuid}",
        info.id, device.name
    ))
}

fn partition_uuids(ctx: &AgentContext) -> Result<Value, CommandError> {
    let device = ctx
        .written_device
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(path) = device else {
        return Ok(json!({}));
    };
    let signature = mbr_disk_signature(&path).map_err(|e| {
        CommandError::new(
            AgentErrorKind::CommandExecutionError,
            format!("reading the disk signature of {}: {e}", path.display()),
        )
    })?;
    Ok(json!({ "root uuid": signature }))
}

/// Flushes every disk to stable storage.
pub fn sync_disks(ctx: &AgentContext) -> Result<(), CommandError> {
    let devices = ctx.disks.list().map_err(device_error)?;
    for d in devices {
        let file = std::fs::File::open(&d.path).map_err(|e| {
            CommandError::new(
                AgentErrorKind::CommandExecutionError,
                format!("opening {} to sync it: {e}", d.name),
            )
        })?;
        file.sync_all().map_err(|e| {
            CommandError::new(
                AgentErrorKind::CommandExecutionError,
                format!("syncing {}: {e}", d.name),
            )
        })?;
    }
    tracing::info!("disks synced");
    Ok(())
}
