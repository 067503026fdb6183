//! The README's main command: `ironclad demo` deploys its demo node end to end.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use ironclad_tests::{bin_dir, binary, free_port, Process};

#[test]
fn the_demo_deploys_its_node_and_stops_cleanly() -> Result<()> {
    let workdir = tempfile::tempdir()?;
    let mut command = Command::new(binary("ironclad")?);
    command
        .arg("demo")
        .arg("--bin-dir")
        .arg(bin_dir()?)
        .arg("--workdir")
        .arg(workdir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()?))
        .arg("--image-size-mib")
        .arg("8")
        .arg("--exit-when-done");
    let mut demo = Process::spawn("demo", command)?;
    let status = demo.wait_exit(Duration::from_secs(120))?;
    let output = demo.output();
    assert!(status.success(), "the demo failed:\n{output}");
    for expected in ["manageable", "available", "wait call-back", "active"] {
        assert!(
            output.contains(expected),
            "the demo shows the node passing through {expected}:\n{output}"
        );
    }
    assert!(output.contains("holds the image byte for byte"), "{output}");
    assert!(
        workdir.path().join("ironclad.sqlite").is_file(),
        "the controller used its embedded database in the work directory"
    );
    Ok(())
}
