//! Block devices: discovery behind the [`BlockDevices`] trait, and the choice of
//! the root device (root-device hints, else the smallest disk of at least 4 GiB).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Smallest disk considered for the root device when no hints are given.
pub const MIN_ROOT_DISK_BYTES: u64 = 4 * GIB;

const GIB: u64 = 1024 * 1024 * 1024;

/// One disk the agent may write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Device name as reported in the inventory (`/dev/sda`, or the file path in host mode).
    pub name: String,
    /// Path to open for reading and writing.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Model string, empty when unknown.
    pub model: String,
    /// Vendor string, empty when unknown.
    pub vendor: String,
    /// Serial number, when known.
    pub serial: Option<String>,
    /// World-wide name, when known.
    pub wwn: Option<String>,
    /// Whether the device is rotational (spinning disk).
    pub rotational: bool,
}

/// Errors of disk discovery and root-device selection.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Reading the device list failed.
    #[error("could not list block devices under {path}: {source}")]
    List {
        /// Directory or file read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No device matches.
    #[error("{0}")]
    NotFound(String),
    /// The hints are malformed or unsupported.
    #[error("invalid root device hints: {0}")]
    BadHints(String),
}

/// Lists the machine's disks.
pub trait BlockDevices: Send + Sync {
    /// Every disk, in a stable order.
    fn list(&self) -> Result<Vec<BlockDevice>, DiskError>;
}

/// Real disks, read from `<root>/sys/block`. Used only as PID 1.
#[derive(Debug, Clone)]
pub struct SysfsBlockDevices {
    root: PathBuf,
}

impl SysfsBlockDevices {
    /// Reads devices under `root` (normally `/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl BlockDevices for SysfsBlockDevices {
    fn list(&self) -> Result<Vec<BlockDevice>, DiskError> {
        let dir = self.root.join("sys/block");
        let entries = fs::read_dir(&dir).map_err(|source| DiskError::List {
            path: dir.clone(),
            source,
        })?;
        let mut devices = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram", "sr", "fd", "nbd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                continue;
            }
            let base = entry.path();
            // `size` is in 512-byte sectors whatever the logical block size.
            let sectors: u64 = read_trimmed(&base.join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if sectors == 0 {
                continue;
            }
            let dev = base.join("device");
            devices.push(BlockDevice {
                name: format!("/dev/{name}"),
                path: PathBuf::from(format!("/dev/{name}")),
                size: sectors * 512,
                model: read_trimmed(&dev.join("model")).unwrap_or_default(),
                vendor: read_trimmed(&dev.join("vendor")).unwrap_or_default(),
                serial: read_trimmed(&dev.join("serial"))
                    .or_else(|| read_trimmed(&base.join("serial"))),
                wwn: read_trimmed(&dev.join("wwid")).or_else(|| read_trimmed(&base.join("wwid"))),
                rotational: read_trimmed(&base.join("queue/rotational")).as_deref() == Some("1"),
            });
        }
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(devices)
    }
}

/// Host mode: regular files named with `--disk` act as disks.
#[derive(Debug, Clone)]
pub struct FileBlockDevices {
    paths: Vec<PathBuf>,
}

impl FileBlockDevices {
    /// The given files (checked to be regular files when listed).
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths }
    }
}

impl BlockDevices for FileBlockDevices {
    fn list(&self) -> Result<Vec<BlockDevice>, DiskError> {
        self.paths
            .iter()
            .map(|path| {
                let meta = fs::metadata(path).map_err(|source| DiskError::List {
                    path: path.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(DiskError::NotFound(format!(
                        "{} is not a regular file; host mode only writes to regular files",
                        path.display()
                    )));
                }
                Ok(BlockDevice {
                    name: path.display().to_string(),
                    path: path.clone(),
                    size: meta.len(),
                    model: "file".to_owned(),
                    vendor: "ironclad".to_owned(),
                    serial: None,
                    wwn: None,
                    rotational: false,
                })
            })
            .collect()
    }
}

/// The root-device hints of a node: `instance_info.root_device`, else `properties.root_device`.
pub fn root_device_hints(
    instance_info: &Map<String, Value>,
    properties: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, DiskError> {
    for source in [instance_info, properties] {
        match source.get("root_device") {
            None | Some(Value::Null) => continue,
            Some(Value::Object(m)) if m.is_empty() => continue,
            Some(Value::Object(m)) => return Ok(Some(m.clone())),
            Some(Value::String(s)) if s.trim().is_empty() => continue,
            Some(Value::String(s)) => {
                return match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(m)) => Ok(Some(m)),
                    _ => Err(DiskError::BadHints(format!(
                        "root_device {s:?} is not a JSON object"
                    ))),
                }
            }
            Some(other) => {
                return Err(DiskError::BadHints(format!(
                    "root_device must be an object, got {other}"
                )))
            }
        }
    }
    Ok(None)
}

fn hint_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Compares an integer against a hint such as `10`, `>= 4`, `<= 100`, `== 8`, `s== 8`.
fn match_number(hint: &str, actual: u64) -> Result<bool, DiskError> {
    let hint = hint.trim();
    for (op, f) in [
        ("s==", (|a, b| a == b) as fn(u64, u64) -> bool),
        ("s!=", |a, b| a != b),
        (">=", |a, b| a >= b),
        ("<=", |a, b| a <= b),
        ("==", |a, b| a == b),
        ("!=", |a, b| a != b),
        (">", |a, b| a > b),
        ("<", |a, b| a < b),
    ] {
        if let Some(rest) = hint.strip_prefix(op) {
            let wanted = parse_size(rest)?;
            return Ok(f(actual, wanted));
        }
    }
    Ok(actual == parse_size(hint)?)
}

fn parse_size(s: &str) -> Result<u64, DiskError> {
    let s = s.trim();
    s.parse::<u64>()
        .or_else(|_| s.parse::<f64>().map(|f| f as u64))
        .map_err(|_| DiskError::BadHints(format!("size hint {s:?} is not a number of GiB")))
}

/// Compares a string against a hint: exact (case-insensitive), `s== x`, `s!= x`,
/// `<in> x` (substring) or `<or> a <or> b`.
fn match_string(hint: &str, actual: &str) -> bool {
    let hint = hint.trim();
    let actual_l = actual.trim().to_lowercase();
    if hint.starts_with("<or>") {
        return hint
            .split("<or>")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .any(|alt| match_string(alt, actual));
    }
    if let Some(rest) = hint.strip_prefix("<in>") {
        return actual_l.contains(&rest.trim().to_lowercase());
    }
    if let Some(rest) = hint.strip_prefix("s!=") {
        return actual_l != rest.trim().to_lowercase();
    }
    let wanted = hint
        .strip_prefix("s==")
        .unwrap_or(hint)
        .trim()
        .to_lowercase();
    actual_l == wanted
}

fn device_matches(device: &BlockDevice, hints: &Map<String, Value>) -> Result<bool, DiskError> {
    for (key, value) in hints {
        let text = hint_text(value);
        let ok = match key.as_str() {
            "size" => match_number(&text, device.size / GIB)?,
            "name" => {
                let wanted = text.strip_prefix("s==").unwrap_or(&text).trim();
                let with_dev = if wanted.starts_with('/') {
                    wanted.to_owned()
                } else {
                    format!("/dev/{wanted}")
                };
                device.name == wanted || device.name == with_dev
            }
            "model" => match_string(&text, &device.model),
            "vendor" => match_string(&text, &device.vendor),
            "serial" => device
                .serial
                .as_deref()
                .is_some_and(|s| match_string(&text, s)),
            "wwn" => device.wwn.as_deref().is_some_and(|s| match_string(&text, s)),
            "rotational" => {
                let wanted = match value {
                    Value::Bool(b) => *b,
                    _ => matches!(text.to_lowercase().as_str(), "true" | "1" | "yes" | "on"),
                };
                device.rotational == wanted
            }
            other => {
                return Err(DiskError::BadHints(format!(
                    "hint {other:?} is not supported by this agent (supported: name, size, model, vendor, serial, wwn, rotational); remove it from the node's root_device"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Picks the root device: the first device matching `hints`, or without hints
/// the smallest device of at least [`MIN_ROOT_DISK_BYTES`].
pub fn choose_root_device(
    devices: &[BlockDevice],
    hints: Option<&Map<String, Value>>,
) -> Result<BlockDevice, DiskError> {
    if devices.is_empty() {
        return Err(DiskError::NotFound(
            "no disks found on this machine (in host mode, pass --disk FILE)".to_owned(),
        ));
    }
    if let Some(hints) = hints {
        for device in devices {
            if device_matches(device, hints)? {
                return Ok(device.clone());
            }
        }
        let names: Vec<String> = devices
            .iter()
            .map(|d| format!("{} ({} GiB)", d.name, d.size / GIB))
            .collect();
        return Err(DiskError::NotFound(format!(
            "no disk matches the root device hints {}; disks present: {}. Fix the node's root_device hints",
            Value::Object(hints.clone()),
            names.join(", ")
        )));
    }
    devices
        .iter()
        .filter(|d| d.size >= MIN_ROOT_DISK_BYTES)
        .min_by_key(|d| d.size)
        .cloned()
        .ok_or_else(|| {
            DiskError::NotFound(format!(
                "no disk of at least 4 GiB found among {} disk(s); give the node a root_device hint or a bigger disk",
                devices.len()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dev(name: &str, gib: u64, model: &str, serial: &str) -> BlockDevice {
        BlockDevice {
            name: name.to_owned(),
            path: PathBuf::from(name),
            size: gib * GIB,
            model: model.to_owned(),
            vendor: "ATA".to_owned(),
            serial: Some(serial.to_owned()),
            wwn: Some(format!("0x{serial}")),
            rotational: false,
        }
    }

    fn devices() -> Vec<BlockDevice> {
        vec![
            dev("/dev/sda", 100, "Big Disk", "S1"),
            dev("/dev/sdb", 2, "Tiny", "S2"),
            dev("/dev/sdc", 10, "Small Disk", "S3"),
        ]
    }

    fn hints(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn smallest_disk_of_4_gib_without_hints() {
        assert_eq!(
            choose_root_device(&devices(), None).unwrap().name,
            "/dev/sdc"
        );
        let tiny = vec![dev("/dev/sdb", 2, "Tiny", "S2")];
        assert!(matches!(
            choose_root_device(&tiny, None),
            Err(DiskError::NotFound(_))
        ));
    }

    #[test]
    fn size_operators() {
        let pick = |h: Value| choose_root_device(&devices(), Some(&hints(h))).map(|d| d.name);
        assert_eq!(pick(json!({"size": ">= 50"})).unwrap(), "/dev/sda");
        assert_eq!(pick(json!({"size": 10})).unwrap(), "/dev/sdc");
        assert_eq!(pick(json!({"size": "<= 5"})).unwrap(), "/dev/sdb");
        assert_eq!(pick(json!({"size": "s== 100"})).unwrap(), "/dev/sda");
        assert!(pick(json!({"size": "> 1000"})).is_err());
        assert!(matches!(
            pick(json!({"size": "big"})),
            Err(DiskError::BadHints(_))
        ));
    }

    #[test]
    fn string_hints() {
        let pick = |h: Value| choose_root_device(&devices(), Some(&hints(h))).map(|d| d.name);
        assert_eq!(pick(json!({"name": "sdb"})).unwrap(), "/dev/sdb");
        assert_eq!(pick(json!({"name": "/dev/sdc"})).unwrap(), "/dev/sdc");
        assert_eq!(pick(json!({"serial": "s3"})).unwrap(), "/dev/sdc");
        assert_eq!(pick(json!({"model": "<in> big"})).unwrap(), "/dev/sda");
        assert_eq!(
            pick(json!({"model": "<or> nope <or> Tiny"})).unwrap(),
            "/dev/sdb"
        );
        assert_eq!(
            pick(json!({"wwn": "0xS1", "vendor": "ata"})).unwrap(),
            "/dev/sda"
        );
        assert!(matches!(
            pick(json!({"hctl": "0:0:0:0"})),
            Err(DiskError::BadHints(_))
        ));
    }

    #[test]
    fn hints_come_from_instance_info_first() {
        let ii = hints(json!({"root_device": {"name": "/dev/sda"}}));
        let props = hints(json!({"root_device": {"name": "/dev/sdb"}}));
        let h = root_device_hints(&ii, &props).unwrap().unwrap();
        assert_eq!(h["name"], "/dev/sda");
        let h = root_device_hints(&Map::new(), &props).unwrap().unwrap();
        assert_eq!(h["name"], "/dev/sdb");
        assert!(root_device_hints(&Map::new(), &Map::new())
            .unwrap()
            .is_none());
    }

    #[test]
    fn sysfs_tree_is_read() {
        let root = tempfile::tempdir().unwrap();
        let sda = root.path().join("sys/block/sda");
        fs::create_dir_all(sda.join("device")).unwrap();
        fs::create_dir_all(sda.join("queue")).unwrap();
        fs::write(sda.join("size"), "20971520\n").unwrap();
        fs::write(sda.join("device/model"), "QEMU HARDDISK  \n").unwrap();
        fs::write(sda.join("queue/rotational"), "1\n").unwrap();
        fs::create_dir_all(root.path().join("sys/block/loop0")).unwrap();
        let list = SysfsBlockDevices::new(root.path()).list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "/dev/sda");
        assert_eq!(list[0].size, 10 * GIB);
        assert_eq!(list[0].model, "QEMU HARDDISK");
        assert!(list[0].rotational);
    }
}
