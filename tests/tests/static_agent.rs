//! The agent ships as one static binary: no ELF interpreter (a static-pie keeps a
//! dynamic section for self-relocation, so only the interpreter is checked).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

const PT_INTERP: u32 = 3;

/// The musl build from `scripts/test`, or a fresh one.
fn static_agent() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("IRONCLAD_STATIC_AGENT") {
        return Ok(PathBuf::from(path));
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .args([
            "build",
            "-p",
            "ironclad-agent",
            "--target",
            "x86_64-unknown-linux-musl",
        ])
        .status()
        .context("running cargo build for the musl target")?;
    if !status.success() {
        bail!(
            "the static agent does not build (is the musl target installed? run ./scripts/setup)"
        );
    }
    Ok(workspace.join("target/x86_64-unknown-linux-musl/debug/ironclad-agent"))
}

/// Program header types of a 64-bit little-endian ELF file.
fn program_header_types(elf: &[u8]) -> Result<Vec<u32>> {
    ensure!(
        elf.len() >= 64 && &elf[..4] == b"\x7fELF",
        "not an ELF file"
    );
    ensure!(
        elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let phoff = usize::try_from(u64::from_le_bytes(elf[32..40].try_into()?))?;
    let phentsize = usize::from(u16_at(54));
    let phnum = usize::from(u16_at(56));
    (0..phnum)
        .map(|i| {
            let at = phoff + i * phentsize;
            let bytes = elf.get(at..at + 4).context("truncated program header")?;
            Ok(u32::from_le_bytes(bytes.try_into()?))
        })
        .collect()
}

#[test]
fn the_agent_is_a_static_binary() -> Result<()> {
    let path = static_agent()?;
    let elf = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let types = program_header_types(&elf)?;
    assert!(
        !types.is_empty(),
        "no program headers in {}",
        path.display()
    );
    assert!(
        !types.contains(&PT_INTERP),
        "{} asks for a dynamic loader",
        path.display()
    );
    // And it runs on its own.
    let output = Command::new(&path).arg("--help").output()?;
    assert!(output.status.success(), "{} --help failed", path.display());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--api-url"));
    Ok(())
}

#[test]
fn a_dynamic_binary_is_recognised_as_such() -> Result<()> {
    // The check above must be able to fail: this test binary is dynamically linked.
    let elf = std::fs::read(std::env::current_exe()?)?;
    let types = program_header_types(&elf)?;
    assert!(types.contains(&PT_INTERP));
    Ok(())
}
