//! UEFI boot entries written through efivarfs, as `efibootmgr -c` would:
//! a `Boot####` variable holding an `EFI_LOAD_OPTION` (a hard-drive media
//! device path to the ESP's GPT partition, then a file path to the loader),
//! and the new entry put first in `BootOrder`. Entries with the same label are
//! removed first.

use std::path::Path;

/// GUID of the EFI global variables (`EFI_GLOBAL_VARIABLE`).
pub const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Variable attributes: non-volatile, boot-service and runtime access.
const ATTRS: u32 = 0x1 | 0x2 | 0x4;
/// `LOAD_OPTION_ACTIVE`.
const LOAD_OPTION_ACTIVE: u32 = 0x1;

/// Why a boot entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootloaderError {
    /// An efivarfs operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The variable file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// All 65536 entry numbers are in use.
    #[error("no free Boot#### number in {0}")]
    Full(String),
}

/// Where the loader lives: the ESP's GPT partition and the loader's path on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspLocation {
    /// Partition number (1-based).
    pub number: u32,
    /// First LBA (512-byte sectors).
    pub start_lba: u64,
    /// Size in sectors.
    pub size_lba: u64,
    /// The partition's GPT unique GUID.
    pub part_guid: uuid::Uuid,
    /// Loader path on the ESP, with backslashes (`\EFI\BOOT\BOOTX64.EFI`).
    pub loader: String,
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The device path: HD(part, GPT, guid, start, size) / File(loader) / End.
pub fn device_path(esp: &EspLocation) -> Vec<u8> {
    let mut p = Vec::new();
    // Media (4) / Hard Drive (1), 42 bytes.
    p.extend_from_slice(&[4, 1]);
    p.extend_from_slice(&42u16.to_le_bytes());
    p.extend_from_slice(&esp.number.to_le_bytes());
    p.extend_from_slice(&esp.start_lba.to_le_bytes());
    p.extend_from_slice(&esp.size_lba.to_le_bytes());
    p.extend_from_slice(&esp.part_guid.to_bytes_le());
    p.push(2); // partition format: GPT
    p.push(2); // signature type: GUID
               // Media (4) / File Path (4).
    let name = utf16z(&esp.loader);
    p.extend_from_slice(&[4, 4]);
    p.extend_from_slice(&((4 + name.len()) as u16).to_le_bytes());
    p.extend_from_slice(&name);
    // End of the whole device path.
    p.extend_from_slice(&[0x7f, 0xff, 4, 0]);
    p
}

/// An `EFI_LOAD_OPTION` for `esp` described as `label`.
pub fn load_option(label: &str, esp: &EspLocation) -> Vec<u8> {
    let path = device_path(esp);
    let mut v = Vec::new();
    v.extend_from_slice(&LOAD_OPTION_ACTIVE.to_le_bytes());
    v.extend_from_slice(&(path.len() as u16).to_le_bytes());
    v.extend_from_slice(&utf16z(label));
    v.extend_from_slice(&path);
    v
}

/// The description of a load option (the UTF-16 string after the 6-byte head).
pub fn option_label(option: &[u8]) -> Option<String> {
    let units: Vec<u16> = option
        .get(6..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

fn var_path(efivars: &Path, name: &str) -> std::path::PathBuf {
    efivars.join(format!("{name}-{EFI_GLOBAL}"))
}

/// Reads a variable's data (without the 4-byte attributes).
fn read_var(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path)
        .ok()
        .map(|v| v.get(4..).unwrap_or_default().to_vec())
}

/// efivarfs marks variables immutable; clear the flag before changing one.
fn make_mutable(path: &Path) {
    use std::os::unix::io::AsRawFd;
    nix::ioctl_read!(get_flags, b'f', 1, nix::libc::c_long);
    nix::ioctl_write_ptr!(set_flags, b'f', 2, nix::libc::c_long);
    const IMMUTABLE: nix::libc::c_long = 0x10;
    let Ok(f) = std::fs::File::open(path) else {
        return;
    };
    let mut flags: nix::libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long through the pointer, which
    // points at a live local for the whole call; the descriptor is open.
    if unsafe { get_flags(f.as_raw_fd(), &mut flags) }.is_ok() && flags & IMMUTABLE != 0 {
        flags &= !IMMUTABLE;
        // SAFETY: FS_IOC_SETFLAGS reads one long through the pointer (a live local).
        if let Err(e) = unsafe { set_flags(f.as_raw_fd(), &flags) } {
            tracing::debug!("{}: clearing the immutable flag: {e}", path.display());
        }
    }
}

fn write_var(path: &Path, data: &[u8]) -> Result<(), BootloaderError> {
    if path.exists() {
        make_mutable(path);
    }
    let mut v = ATTRS.to_le_bytes().to_vec();
    v.extend_from_slice(data);
    std::fs::write(path, v).map_err(|source| BootloaderError::Io {
        op: "writing",
        path: path.display().to_string(),
        source,
    })
}

/// Adds a boot entry `label` for `esp` in `efivars` (`/sys/firmware/efi/efivars`),
/// replacing entries with the same label, and puts it first in `BootOrder`.
/// Returns its number.
pub fn install_entry(
    efivars: &Path,
    label: &str,
    esp: &EspLocation,
) -> Result<u16, BootloaderError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| BootloaderError::Io { op, path, source }
    };
    let mut used = Vec::new();
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(efivars).map_err(io("listing", efivars))? {
        let entry = entry.map_err(io("listing", efivars))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(num) = name
            .strip_suffix(&format!("-{EFI_GLOBAL}"))
            .and_then(|n| n.strip_prefix("Boot"))
            .filter(|n| n.len() == 4)
            .and_then(|n| u16::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        let same = read_var(&entry.path())
            .and_then(|d| option_label(&d))
            .as_deref()
            == Some(label);
        if same {
            make_mutable(&entry.path());
            std::fs::remove_file(entry.path()).map_err(io("removing", &entry.path()))?;
            removed.push(num);
        } else {
            used.push(num);
        }
    }
    let number = (0..=u16::MAX)
        .find(|n| !used.contains(n))
        .ok_or_else(|| BootloaderError::Full(efivars.display().to_string()))?;
    write_var(
        &var_path(efivars, &format!("Boot{number:04X}")),
        &load_option(label, esp),
    )?;
    let order_path = var_path(efivars, "BootOrder");
    let old: Vec<u16> = read_var(&order_path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .filter(|n| *n != number && !removed.contains(n))
        .collect();
    let order: Vec<u8> = std::iter::once(number)
        .chain(old)
        .flat_map(u16::to_le_bytes)
        .collect();
    write_var(&order_path, &order)?;
    tracing::info!(
        "UEFI boot entry Boot{number:04X} {label:?} → {}",
        esp.loader
    );
    Ok(number)
}

/// The removable-media loader path for this CPU architecture.
pub fn default_loader() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        r"\EFI\BOOT\BOOTAA64.EFI"
    } else {
        r"\EFI\BOOT\BOOTX64.EFI"
    }
}
