//! The `image` extension: `install_bootloader`.
//!
//! UEFI: a boot entry for the deployed disk's ESP is written to NVRAM through
//! efivarfs (`<sysroot>/sys/firmware/efi/efivars`). The loader is the
//! removable-media path (`\EFI\BOOT\BOOTX64.EFI`): the ESP's filesystem is not
//! read (no search for shim CSV files yet). BIOS: whole-disk images need
//! nothing; partition images would need grub-install inside the image, which
//! is refused unless `enable_bios_bootloader_install` (and then reported as
//! unsupported by this agent).

use std::sync::Arc;

use ironclad_versioning::agent_api::{AgentErrorKind, CommandError};
use serde_json::{Map, Value};

use super::{check_kwargs, AgentContext, ExecuteError, Prepared};
use crate::image::bootloader::{default_loader, install_entry, EspLocation};
use crate::image::partitions::{read_table, TableKind, SECTOR};

/// GPT type GUID of an EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Prepares an `image.*` command.
pub fn prepare(
    ctx: &Arc<AgentContext>,
    command: &str,
    params: Map<String, Value>,
) -> Result<Prepared, ExecuteError> {
    let ctx = ctx.clone();
    match command {
        "install_bootloader" => {
            let optional = [
                "root_uuid",
                "efi_system_part_uuid",
                "prep_boot_part_uuid",
                "target_boot_mode",
                "ignore_bootloader_failure",
                "software_raid",
            ];
            if let Err(e) = check_kwargs(command, &params, &[], &optional) {
                return Ok(Prepared::failed(e));
            }
            Ok(Prepared::background(async move {
                tokio::task::spawn_blocking(move || install_bootloader(&ctx, &params))
                    .await
                    .map_err(|e| fail(format!("worker failed: {e}")))?
            }))
        }
        other => Err(ExecuteError::UnknownCommand(other.to_owned())),
    }
}

fn fail(details: String) -> CommandError {
    CommandError::new(AgentErrorKind::CommandExecutionError, details)
}

fn str_param<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Runs `install_bootloader` (blocking).
pub fn install_bootloader(
    ctx: &AgentContext,
    params: &Map<String, Value>,
) -> Result<Value, CommandError> {
    let mode = str_param(params, "target_boot_mode").unwrap_or("bios");
    let ignore = params
        .get("ignore_bootloader_failure")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let device = ctx
        .written_device
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let device = match device {
        Some(d) => d,
        None => super::standby::root_device(ctx)?.path,
    };
    if mode == "uefi" {
        let efivars = ctx.sysroot.join("sys/firmware/efi/efivars");
        if !efivars.is_dir() {
            return Err(fail(format!(
                "target_boot_mode is uefi but {} does not exist: the ramdisk did not boot in UEFI mode",
                efivars.display()
            )));
        }
        let is_block = std::fs::metadata(&device)
            .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
            .unwrap_or(false);
        if !is_block && ctx.sysroot == std::path::Path::new("/") {
            return Err(fail(
                "host mode: refusing to write the host's UEFI variables; give --sysroot a test tree with sys/firmware/efi/efivars".into(),
            ));
        }
        let table = read_table(&device).map_err(|e| fail(e.to_string()))?;
        let wanted = str_param(params, "efi_system_part_uuid").map(str::to_lowercase);
        let esp = match table {
            Some((TableKind::Gpt, parts)) => parts.into_iter().find(|p| match &wanted {
                Some(u) => p.part_uuid.eq_ignore_ascii_case(u),
                None => p.type_id == ESP_TYPE,
            }),
            _ => None,
        };
        let Some(esp) = esp else {
            return Err(CommandError::new(
                AgentErrorKind::DeviceNotFound,
                format!(
                    "no EFI system partition found on {}; a UEFI deploy needs a GPT disk with an ESP",
                    device.display()
                ),
            ));
        };
        let location = EspLocation {
            number: esp.number,
            start_lba: esp.start / SECTOR,
            size_lba: esp.size / SECTOR,
            part_guid: esp.part_uuid.parse().map_err(|e| fail(format!("{e}")))?,
            loader: default_loader().to_owned(),
        };
        install_entry(&efivars, "ironic1", &location).map_err(|e| fail(e.to_string()))?;
        return Ok(Value::Null);
    }
    let root_uuid = str_param(params, "root_uuid").unwrap_or("");
    if root_uuid.is_empty() || root_uuid.starts_with("0x") {
        // Whole-disk image: its own boot loader is already on the disk.
        return Ok(Value::Null);
    }
    let enabled = ctx
        .lookup_config
        .enable_bios_bootloader_install
        .unwrap_or(false);
    let details = if enabled {
        "installing GRUB for BIOS partition images is not supported by this agent; use a whole-disk image or UEFI"
    } else {
        "installing a boot loader for BIOS partition images is disabled (enable_bios_bootloader_install is false); use a whole-disk image or UEFI"
    };
    if ignore {
        tracing::warn!("{details} (ignored: ignore_bootloader_failure)");
        return Ok(Value::Null);
    }
    Err(CommandError::new(
        AgentErrorKind::InvalidImage,
        details.to_owned(),
    ))
}
