//! Loading the kernel modules shipped flat in the initramfs (`/lib/modules/*.ko`),
//! in dependency order computed at boot from each module's own `.modinfo`
//! section (`name=`, `depends=`), so no hand-kept list or `modules.dep` is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use object::{Object, ObjectSection};

/// Why a module's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModinfoError {
    /// The file is not an ELF object.
    #[error("{path}: not an ELF object: {reason}")]
    NotElf {
        /// The module file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The object has no `.modinfo` section.
    #[error("{0}: no .modinfo section; is it a kernel module?")]
    NoModinfo(PathBuf),
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The module file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What the loader needs to know about one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The module's name (`name=` in `.modinfo`, else the file stem), with `-` as `_`.
    pub name: String,
    /// Modules this one needs (`depends=`), normalized like `name`.
    pub depends: Vec<String>,
    /// The `.ko` file.
    pub path: PathBuf,
}

/// Normalizes a module name: the kernel treats `-` and `_` alike.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo(blob: &[u8], path: &Path) -> ModuleInfo {
    let mut name = None;
    let mut depends = Vec::new();
    for entry in blob.split(|b| *b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some(value) = entry.strip_prefix("name=") {
            name = Some(normalize_name(value));
        } else if let Some(value) = entry.strip_prefix("depends=") {
            depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(normalize_name),
            );
        }
    }
    let name = name.unwrap_or_else(|| {
        normalize_name(
            &path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    });
    ModuleInfo {
        name,
        depends,
        path: path.to_owned(),
    }
}

/// Reads a module file's `.modinfo` section.
pub fn read_module(path: &Path) -> Result<ModuleInfo, ModinfoError> {
    let data = std::fs::read(path).map_err(|source| ModinfoError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file = object::File::parse(&*data).map_err(|e| ModinfoError::NotElf {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| ModinfoError::NoModinfo(path.to_owned()))?;
    let blob = section.data().map_err(|e| ModinfoError::NotElf {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(parse_modinfo(blob, path))
}

/// Orders modules so that each comes after the modules it depends on.
///
/// Dependencies that are not among `modules` are assumed built in (or already
/// loaded) and returned in the second list so the caller can log them. A
/// dependency cycle cannot be satisfied; its members are appended last, in name
/// order, so that loading them fails visibly rather than silently.
pub fn load_order(modules: &[ModuleInfo]) -> (Vec<ModuleInfo>, Vec<String>) {
    let by_name: BTreeMap<&str, &ModuleInfo> =
        modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut missing = BTreeSet::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut visiting: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();

    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a ModuleInfo>,
        done: &mut BTreeSet<&'a str>,
        visiting: &mut BTreeSet<&'a str>,
        missing: &mut BTreeSet<String>,
        order: &mut Vec<ModuleInfo>,
    ) {
        if done.contains(name) || visiting.contains(name) {
            return;
        }
        let Some(module) = by_name.get(name) else {
            missing.insert(name.to_owned());
            return;
        };
        visiting.insert(name);
        for dep in &module.depends {
            visit(dep, by_name, done, visiting, missing, order);
        }
        visiting.remove(name);
        done.insert(name);
        order.push((*module).clone());
    }

    for name in by_name.keys() {
        visit(
            name,
            &by_name,
            &mut done,
            &mut visiting,
            &mut missing,
            &mut order,
        );
    }
    (order, missing.into_iter().collect())
}

/// Modules to load first regardless of dependencies: entropy, so that TLS and
/// `getrandom` do not stall waiting for the kernel's random pool.
const FIRST: &[&str] = &["virtio_rng"];

/// Loads every `.ko` under `dir` in dependency order; failures are logged and
/// skipped. Returns the names of the modules loaded.
pub fn load_all(dir: &Path) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!("no kernel modules to load from {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let mut modules = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("ko") {
            continue;
        }
        match read_module(&path) {
            Ok(info) => modules.push(info),
            Err(e) => tracing::warn!("skipping module: {e}"),
        }
    }
    let (mut order, builtin) = load_order(&modules);
    if !builtin.is_empty() {
        tracing::info!(
            "module dependencies not shipped (assumed built in): {}",
            builtin.join(",")
        );
    }
    // Entropy first, then everything else, keeping dependency order (virtio_rng
    // depends only on virtio modules, which are moved along with it).
    let mut first: Vec<ModuleInfo> = Vec::new();
    for name in FIRST {
        let mut needed: BTreeSet<String> = BTreeSet::new();
        collect_deps(name, &order, &mut needed);
        let (take, keep): (Vec<_>, Vec<_>) =
            order.into_iter().partition(|m| needed.contains(&m.name));
        first.extend(take);
        order = keep;
    }
    first.extend(order);

    let mut loaded = Vec::new();
    for module in first {
        if Path::new("/sys/module")
            .join(&module.name)
            .join("initstate")
            .exists()
        {
            tracing::debug!("module {} already loaded", module.name);
            continue;
        }
        let started = Instant::now();
        match finit(&module.path) {
            Ok(()) => {
                tracing::info!(
                    "loaded module {} in {} ms",
                    module.name,
                    started.elapsed().as_millis()
                );
                loaded.push(module.name);
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => tracing::warn!(
                "loading module {} ({}) failed: {e}; continuing without it",
                module.name,
                module.path.display()
            ),
        }
    }
    loaded
}

fn collect_deps(name: &str, modules: &[ModuleInfo], into: &mut BTreeSet<String>) {
    if !into.insert(name.to_owned()) {
        return;
    }
    if let Some(module) = modules.iter().find(|m| m.name == name) {
        for dep in &module.depends {
            collect_deps(dep, modules, into);
        }
    }
}

fn finit(path: &Path) -> Result<(), nix::errno::Errno> {
    let file = std::fs::File::open(path).map_err(|e| {
        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::errno::Errno::EIO as i32))
    })?;
    nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(blob: &str, file: &str) -> ModuleInfo {
        parse_modinfo(blob.replace('|', "\0").as_bytes(), Path::new(file))
    }

    #[test]
    fn modinfo_is_parsed() {
        let m = info(
            "license=GPL|depends=virtio_ring,virtio-pci-modern-dev,|name=virtio_pci|vermagic=6.1|",
            "/lib/modules/virtio_pci.ko",
        );
        assert_eq!(m.name, "virtio_pci");
        assert_eq!(m.depends, ["virtio_ring", "virtio_pci_modern_dev"]);
        let m = info("depends=|license=GPL", "/lib/modules/virtio-rng.ko");
        assert_eq!(m.name, "virtio_rng");
        assert!(m.depends.is_empty());
    }

    #[test]
    fn dependencies_come_first() {
        let modules = vec![
            info(
                "name=virtio_net|depends=virtio_ring,virtio,net_failover",
                "a.ko",
            ),
            info("name=net_failover|depends=failover", "b.ko"),
            info("name=virtio_pci|depends=virtio_ring,virtio", "c.ko"),
            info("name=virtio|depends=virtio_ring", "d.ko"),
            info("name=virtio_ring|depends=", "e.ko"),
            info("name=failover|depends=", "f.ko"),
            info("name=evdev|depends=", "g.ko"),
            info("name=button|depends=acpi_core", "h.ko"),
        ];
        let (order, missing) = load_order(&modules);
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 8);
        assert!(pos("virtio_ring") < pos("virtio"));
        assert!(pos("virtio") < pos("virtio_pci"));
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert_eq!(missing, ["acpi_core"]);
    }

    #[test]
    fn cycles_do_not_hang() {
        let modules = vec![
            info("name=a|depends=b", "a.ko"),
            info("name=b|depends=a", "b.ko"),
        ];
        let (order, missing) = load_order(&modules);
        assert_eq!(order.len(), 2);
        assert!(missing.is_empty());
    }
}
