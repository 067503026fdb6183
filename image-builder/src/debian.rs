//! Packages from the distribution's archive: resolve, download with the system's
//! package manager into a cache, and unpack without installing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a package could not be fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A package-manager command could not run or failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output or the spawn error.
        detail: String,
    },
    /// The metapackage names no concrete kernel package.
    #[error("package {0} does not depend on a concrete linux-image package")]
    NoKernel(String),
    /// The unpacked package does not hold what was expected.
    #[error("{0}")]
    Layout(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn run(command: &mut Command) -> Result<String, PackageError> {
    let line = format!("{command:?}");
    let output = command.output().map_err(|e| PackageError::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        return Err(PackageError::Command {
            command: line,
            detail: tail,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The concrete package a metapackage such as `linux-image-cloud-amd64` depends on;
/// a concrete package name is returned unchanged.
pub fn resolve_kernel_package(package: &str) -> Result<String, PackageError> {
    let depends = run(Command::new("apt-cache").args(["depends", package]))?;
    let concrete = depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends: ")?;
        let name = name.trim_matches(|c| c == '<' || c == '>');
        (name.starts_with("linux-image-") && name.chars().any(|c| c.is_ascii_digit()))
            .then(|| name.to_owned())
    });
    match concrete {
        Some(name) => Ok(name),
        None if package.chars().any(|c| c.is_ascii_digit()) => Ok(package.to_owned()),
        None => Err(PackageError::NoKernel(package.to_owned())),
    }
}

/// Downloads `package` into `cache` with `apt-get download` unless a `.deb` of it is
/// already there; returns the `.deb`'s path.
pub fn download(package: &str, cache: &Path) -> Result<PathBuf, PackageError> {
    std::fs::create_dir_all(cache).map_err(|source| PackageError::Io {
        context: format!("creating {}", cache.display()),
        source,
    })?;
    if let Some(deb) = cached_deb(package, cache) {
        return Ok(deb);
    }
    // Download into a private directory so that concurrent builds never see a
    // half-written .deb, then move it into the cache.
    let private = private_dir(cache, package);
    std::fs::create_dir_all(&private).map_err(|source| PackageError::Io {
        context: format!("creating {}", private.display()),
        source,
    })?;
    let result = run(Command::new("apt-get")
        .args(["download", package])
        .current_dir(&private));
    if let Some(deb) = cached_deb(package, &private) {
        if let Some(name) = deb.file_name() {
            let _ = std::fs::rename(&deb, cache.join(name));
        }
    }
    let _ = std::fs::remove_dir_all(&private);
    result?;
    cached_deb(package, cache).ok_or_else(|| {
        PackageError::Layout(format!(
            "apt-get download {package} left no .deb in {}",
            cache.display()
        ))
    })
}

/// A directory under `cache` that no other process uses.
fn private_dir(cache: &Path, package: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    cache.join(format!(".{package}.{}.{nanos}", std::process::id()))
}

fn cached_deb(package: &str, cache: &Path) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// Unpacks a `.deb` into `dest` with `dpkg-deb -x` (no installation, no hooks).
pub fn unpack(deb: &Path, dest: &Path) -> Result<(), PackageError> {
    std::fs::create_dir_all(dest).map_err(|source| PackageError::Io {
        context: format!("creating {}", dest.display()),
        source,
    })?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))?;
    Ok(())
}

/// A kernel unpacked from its package.
#[derive(Debug, Clone)]
pub struct KernelTree {
    /// The kernel image (`boot/vmlinuz-<version>`).
    pub vmlinuz: PathBuf,
    /// The module tree (`lib/modules/<version>`).
    pub modules_dir: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// The package it came from.
    pub package: String,
}

impl KernelTree {
    /// Finds the kernel image and module tree in an unpacked package.
    pub fn locate(root: &Path, package: &str) -> Result<Self, PackageError> {
        let modules = root.join("lib/modules");
        let version = std::fs::read_dir(&modules)
            .map_err(|source| PackageError::Io {
                context: format!("reading {}", modules.display()),
                source,
            })?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .next()
            .ok_or_else(|| {
                PackageError::Layout(format!("{} holds no kernel version", modules.display()))
            })?;
        let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
        if !vmlinuz.is_file() {
            return Err(PackageError::Layout(format!(
                "{} is missing from {package}",
                vmlinuz.display()
            )));
        }
        Ok(Self {
            vmlinuz,
            modules_dir: modules.join(&version),
            version,
            package: package.to_owned(),
        })
    }
}

/// Fetches (with the cache) and unpacks the kernel of `package`.
pub fn fetch_kernel(package: &str, cache: &Path) -> Result<KernelTree, PackageError> {
    let concrete = resolve_kernel_package(package)?;
    let tree = fetch_package(&concrete, cache)?;
    KernelTree::locate(&tree, &concrete)
}

/// Fetches (with the cache) and unpacks any package; returns the unpacked root.
pub fn fetch_package(package: &str, cache: &Path) -> Result<PathBuf, PackageError> {
    let deb = download(package, cache)?;
    let tree = cache.join(format!("{package}.tree"));
    if !tree.is_dir() {
        let partial = private_dir(cache, package);
        let unpacked = unpack(&deb, &partial);
        // Another build may have finished first; its tree is as good as ours.
        let moved = unpacked.and_then(|()| {
            std::fs::rename(&partial, &tree).or_else(|source| {
                if tree.is_dir() {
                    Ok(())
                } else {
                    Err(PackageError::Io {
                        context: format!("moving {} into place", partial.display()),
                        source,
                    })
                }
            })
        });
        let _ = std::fs::remove_dir_all(&partial);
        moved?;
    }
    Ok(tree)
}
