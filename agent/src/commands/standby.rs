//! The `standby` extension: write an image, report its root UUID, sync disks,
//! power off or reboot.

use std::sync::Arc;

use ironclad_versioning::agent_api::{AgentErrorKind, CommandError};
use ironclad_versioning::image_info::{ExpectedChecksum, ImageInfo};
use serde_json::{json, Map, Value};

use super::{check_kwargs, AgentContext, ExecuteError, Prepared};
use crate::disk::{choose_root_device, root_device_hints, BlockDevice, DiskError};
use crate::image::partitions::{self, Planned, Role, TableKind};
use crate::image::{configdrive, mbr_disk_signature};
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
    let mut info = info;
    match configdrive {
        Value::Null => {}
        Value::String(v) if v.is_empty() => {}
        Value::String(v) => info.configdrive = Some(v.clone()),
        _ => {
            return Err("configdrive must be a string: base64 of a gzipped ISO 9660 image, or an http(s) URL of one".to_owned())
        }
    }
    if let Some(cd) = info.configdrive.as_deref().filter(|v| !v.is_empty()) {
        if !configdrive::is_url(cd) {
            configdrive::decode(cd.as_bytes(), false).map_err(|e| e.to_string())?;
        }
    }
    if info.is_partition_image() {
        layout_params(ctx, &info)?;
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
    let iso = match info.configdrive.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => Some(
            configdrive::resolve(ctx.image_writer.client(), v)
                .await
                .map_err(|e| CommandError::new(AgentErrorKind::ImageWriteError, e.to_string()))?,
        ),
        None => None,
    };
    ctx.image_writer.set_last_layout(None);
    *ctx.written_device.lock().unwrap_or_else(|e| e.into_inner()) = None;
    if info.is_partition_image() {
        return write_partition_image(ctx, info, algorithm, &hex, device, iso).await;
    }
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
    if let Some(iso) = iso {
        let (path, size) = (device.path.clone(), device.size);
        let part = blocking(move || {
            configdrive::write_whole_disk(&path, size, &iso)
                .map_err(|e| CommandError::new(AgentErrorKind::ImageWriteError, e.to_string()))
        })
        .await?;
        tracing::info!(
            "config drive written to partition {} of {}",
            part.number,
            device.name
        );
    }
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
    if let Some(layout) = ctx.image_writer.last_layout() {
        return Ok(layout);
    }
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

/// The layout parameters of a partition image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutParams {
    /// Root partition size in MiB.
    pub root_mb: u64,
    /// Swap size in MiB (0: none).
    pub swap_mb: u64,
    /// Ephemeral size in MiB (0: none).
    pub ephemeral_mb: u64,
    /// UEFI (else BIOS).
    pub uefi: bool,
    /// The partition table kind.
    pub label: TableKind,
}

fn number_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A capability (`boot_mode`, `disk_label`) from `capabilities` given as
/// `"k1:v1,k2:v2"` or as an object.
fn capability(caps: Option<&Value>, key: &str) -> Option<String> {
    match caps? {
        Value::String(s) => s.split(',').find_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        }),
        Value::Object(m) => m.get(key).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Reads the partition-image parameters from `image_info` (and the node's
/// capabilities), as Ironic sends them; refuses what cannot be laid out.
pub fn layout_params(ctx: &AgentContext, info: &ImageInfo) -> Result<LayoutParams, String> {
    let x = &info.extra;
    let root_mb = number_of(x.get("root_mb"))
        .or_else(|| number_of(x.get("root_gb")).map(|g| g * 1024))
        .unwrap_or(0);
    if root_mb == 0 {
        return Err("a partition image needs root_mb (or root_gb) above zero in image_info".into());
    }
    if x.get("preserve_ephemeral").and_then(Value::as_bool) == Some(true) {
        return Err(
            "preserve_ephemeral is not supported by this agent yet; redeploy without it".into(),
        );
    }
    let node_caps = |field: &str| {
        ctx.node.as_ref().and_then(|n| {
            let v = match field {
                "instance_info" => n.instance_info.get("capabilities"),
                _ => n.properties.get("capabilities"),
            };
            v.cloned()
        })
    };
    let secure =
        capability(node_caps("instance_info").as_ref(), "secure_boot").is_some_and(|v| v == "true");
    let mode = x
        .get("deploy_boot_mode")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| capability(node_caps("properties").as_ref(), "boot_mode"))
        .unwrap_or_else(|| {
            if ctx.sysroot.join("sys/firmware/efi").is_dir() {
                "uefi".into()
            } else {
                "bios".into()
            }
        });
    let uefi = secure || mode.eq_ignore_ascii_case("uefi");
    let label = x
        .get("disk_label")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| capability(node_caps("instance_info").as_ref(), "disk_label"))
        .or_else(|| capability(node_caps("properties").as_ref(), "disk_label"))
        .unwrap_or_else(|| "msdos".into());
    let label = if uefi {
        TableKind::Gpt
    } else {
        match label.as_str() {
            "gpt" => TableKind::Gpt,
            "msdos" => TableKind::Msdos,
            other => {
                return Err(format!(
                    "disk_label {other:?} is not supported; use msdos or gpt"
                ))
            }
        }
    };
    Ok(LayoutParams {
        root_mb,
        swap_mb: number_of(x.get("swap_mb")).unwrap_or(0),
        ephemeral_mb: number_of(x.get("ephemeral_mb")).unwrap_or(0),
        uefi,
        label,
    })
}

fn write_err(e: impl std::fmt::Display) -> CommandError {
    CommandError::new(AgentErrorKind::ImageWriteError, e.to_string())
}

/// Zeroes the first and last MiB of the disk: no old partition table survives.
fn wipe_tables(path: &std::path::Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; partitions::MIB as usize];
    file.write_all_at(&zeros[..partitions::MIB.min(size) as usize], 0)?;
    if size > 2 * partitions::MIB {
        file.write_all_at(&zeros, size - partitions::MIB)?;
    }
    file.sync_all()
}

/// Writes a partition image: plans the layout, writes the image into the
/// root partition (first MiB last, checksum verified), then the config drive
/// and finally the partition table.
async fn write_partition_image(
    ctx: &Arc<AgentContext>,
    info: &ImageInfo,
    algorithm: ironclad_versioning::image_info::ChecksumAlgorithm,
    hex: &str,
    device: BlockDevice,
    iso: Option<Vec<u8>>,
) -> Result<String, CommandError> {
    let params =
        layout_params(ctx, info).map_err(|e| CommandError::new(AgentErrorKind::InvalidImage, e))?;
    let cd_mib = iso
        .as_ref()
        .map_or(0, |i| (i.len() as u64).div_ceil(partitions::MIB));
    let mut plan = partitions::plan_layout(
        params.label,
        params.uefi,
        &[
            (Role::Ephemeral, params.ephemeral_mb),
            (Role::Swap, params.swap_mb),
            (Role::ConfigDrive, cd_mib),
        ],
        params.root_mb,
        device.size,
    )
    .map_err(write_err)?;
    let Some(root) = plan.iter().find(|p| p.role == Role::Root).cloned() else {
        return Err(write_err("the layout has no root partition"));
    };
    let (path, size) = (device.path.clone(), device.size);
    blocking(move || wipe_tables(&path, size).map_err(write_err)).await?;
    tracing::info!(
        "partition image {}: {:?} label, {}, root partition {} at {} MiB, {} MiB",
        info.id,
        params.label,
        if params.uefi { "UEFI" } else { "BIOS" },
        root.number,
        root.start / partitions::MIB,
        root.size / partitions::MIB
    );
    ctx.image_writer
        .write_region(
            info,
            algorithm,
            hex,
            &device,
            root.start,
            root.size,
            ctx.lookup_config.permitted_image_formats.as_deref(),
        )
        .await
        .map_err(|e| CommandError::new(e.kind(), e.to_string()))?;
    let (path, label, uefi) = (device.path.clone(), params.label, params.uefi);
    let plan_done = blocking(move || {
        if let (Some(iso), Some(cd)) = (iso, plan.iter().find(|p| p.role == Role::ConfigDrive)) {
            let part = partitions::PartInfo {
                number: cd.number,
                start: cd.start,
                size: cd.size,
                name: String::new(),
                part_uuid: String::new(),
                type_id: String::new(),
            };
            configdrive::write_into(&path, &part, &iso).map_err(write_err)?;
        }
        partitions::write_layout(&path, label, uefi, &mut plan).map_err(write_err)?;
        Ok(plan)
    })
    .await?;
    let layout = partition_layout_json(&device, &plan_done)?;
    let root_uuid = layout["root uuid"].as_str().unwrap_or_default().to_owned();
    let esp = layout["efi system partition uuid"]
        .as_str()
        .map(str::to_owned);
    ctx.image_writer.set_last_layout(Some(layout));
    *ctx.written_device.lock().unwrap_or_else(|e| e.into_inner()) = Some(device.path.clone());
    let mut message = format!(
        "image ({}) written to device {} root_uuid={root_uuid}",
        info.id, device.name
    );
    if let Some(esp) = esp.filter(|_| uefi) {
        message.push_str(&format!(" efi_system_partition_uuid={esp}"));
    }
    Ok(message)
}

/// `get_partition_uuids`' answer for a partition image: the partitions map,
/// the root filesystem UUID (PARTUUID when it has none) and the ESP's PARTUUID.
fn partition_layout_json(device: &BlockDevice, plan: &[Planned]) -> Result<Value, CommandError> {
    let file = std::fs::File::open(&device.path)
        .map_err(|e| write_err(format!("reopening {}: {e}", device.name)))?;
    let mut parts = Map::new();
    let mut root_uuid = Value::Null;
    let mut esp = Value::Null;
    for p in plan {
        parts.insert(
            p.role.key().to_owned(),
            Value::String(partitions::partition_device(&device.name, p.number)),
        );
        match p.role {
            Role::Root => {
                root_uuid = Value::String(
                    partitions::fs_uuid(&file, p.start).unwrap_or_else(|| p.part_uuid.clone()),
                );
            }
            Role::Esp => esp = Value::String(p.part_uuid.clone()),
            _ => {}
        }
    }
    Ok(json!({
        "partitions": parts,
        "root uuid": root_uuid,
        "efi system partition uuid": esp,
    }))
}
