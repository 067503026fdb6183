//! Kernel modules: read each `.ko`'s own `.modinfo` section (name, dependencies,
//! firmware), and resolve a profile's module list into its full dependency closure
//! in load order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

/// Why a module tree cannot be read or resolved.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A `.ko` is not an ELF object with a `.modinfo` section.
    #[error("{path} is not a kernel module: {reason}")]
    NotAModule {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A requested or depended-upon module is not in the tree.
    #[error("module {name} (needed by {needed_by}) is not in the kernel's module tree")]
    Missing {
        /// The missing module.
        name: String,
        /// Who asked for it.
        needed_by: String,
    },
    /// Module dependencies form a cycle.
    #[error("module dependencies form a cycle through {0}")]
    Cycle(String),
}

/// What a module says about itself in `.modinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Canonical name (dashes turned into underscores).
    pub name: String,
    /// Where the `.ko` is.
    pub path: PathBuf,
    /// Modules that must be loaded first.
    pub depends: Vec<String>,
    /// Firmware files the module may request, relative to `/lib/firmware`.
    pub firmware: Vec<String>,
}

/// Canonical module name: the kernel treats `-` and `_` alike.
pub fn canonical_name(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

/// Parses the NUL-separated `key=value` pairs of a `.modinfo` section.
pub fn parse_modinfo(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Reads one module's `.modinfo`.
pub fn read_module(path: &Path) -> Result<ModuleInfo, ModuleError> {
    let data = std::fs::read(path).map_err(|source| ModuleError::Io {
        path: path.to_owned(),
        source,
    })?;
    let not_a_module = |reason: String| ModuleError::NotAModule {
        path: path.to_owned(),
        reason,
    };
    let file = object::File::parse(&*data).map_err(|e| not_a_module(e.to_string()))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| not_a_module("no .modinfo section".to_owned()))?;
    let raw = section.data().map_err(|e| not_a_module(e.to_string()))?;
    let file_stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(canonical_name)
        .unwrap_or_default();
    let mut info = ModuleInfo {
        name: file_stem,
        path: path.to_owned(),
        depends: Vec::new(),
        firmware: Vec::new(),
    };
    for (key, value) in parse_modinfo(raw) {
        match key.as_str() {
            "name" => info.name = canonical_name(&value),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(canonical_name),
            ),
            "firmware" => info.firmware.push(value),
            _ => {}
        }
    }
    Ok(info)
}

/// Every module of a kernel tree (`lib/modules/<version>`), by canonical name.
pub fn index_tree(modules_dir: &Path) -> Result<BTreeMap<String, PathBuf>, ModuleError> {
    let mut index = BTreeMap::new();
    let mut pending = vec![modules_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| ModuleError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ModuleError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if name.ends_with(".ko") {
                    index.insert(canonical_name(name), path);
                }
            }
        }
    }
    Ok(index)
}

/// Resolves `wanted` (module names) into their dependency closure, ordered so
/// that every module comes after its dependencies. Names in `builtin` are built
/// into the kernel and need no file.
pub fn resolve(
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    wanted: &[&str],
) -> Result<Vec<ModuleInfo>, ModuleError> {
    let mut ordered = Vec::new();
    let mut done = BTreeSet::new();
    for name in wanted {
        let name = canonical_name(name);
        if builtin.contains(&name) {
            continue;
        }
        visit(
            index,
            builtin,
            &name,
            "the profile",
            &mut Vec::new(),
            &mut done,
            &mut ordered,
        )?;
    }
    Ok(ordered)
}

fn visit(
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    name: &str,
    needed_by: &str,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    ordered: &mut Vec<ModuleInfo>,
) -> Result<(), ModuleError> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        return Err(ModuleError::Cycle(name.to_owned()));
    }
    let path = index.get(name).ok_or_else(|| ModuleError::Missing {
        name: name.to_owned(),
        needed_by: needed_by.to_owned(),
    })?;
    let info = read_module(path)?;
    stack.push(name.to_owned());
    for dependency in &info.depends {
        visit(index, builtin, dependency, name, stack, done, ordered)?;
    }
    stack.pop();
    done.insert(name.to_owned());
    ordered.push(info);
    Ok(())
}

/// Names of the modules built into the kernel, from `modules.builtin`.
pub fn read_builtin(modules_dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .map(canonical_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_pairs_are_split_on_nul() {
        let raw = b"license=GPL\0depends=virtio,virtio_ring\0firmware=a/b.bin\0\0name=virtio_net\0";
        let pairs = parse_modinfo(raw);
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[1], ("depends".into(), "virtio,virtio_ring".into()));
        assert_eq!(pairs[3], ("name".into(), "virtio_net".into()));
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical_name("virtio-rng.ko"), "virtio_rng");
        assert_eq!(canonical_name("nvme_core"), "nvme_core");
    }

    #[test]
    fn missing_modules_are_named() {
        let index = BTreeMap::new();
        let err = resolve(&index, &BTreeSet::new(), &["e1000e"]).unwrap_err();
        assert!(err.to_string().contains("e1000e"), "{err}");
        // Built-in modules need no file.
        let builtin: BTreeSet<String> = ["ext4".to_owned()].into();
        assert!(resolve(&index, &builtin, &["ext4"]).unwrap().is_empty());
    }
}
