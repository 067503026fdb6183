//! A real QEMU driven over QMP: power states as a BMC sees them.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use ironclad_qemu_ci::{Boot, Vm, VmSpec};

#[tokio::test]
async fn qmp_reports_and_changes_the_run_state() {
    let dir = tempfile::tempdir().unwrap();
    let spec = VmSpec {
        name: "qmp-node".into(),
        memory_mib: 64,
        disk: None,
        nics: Vec::new(),
        boot: Boot::Disk,
        state_dir: dir.path().to_path_buf(),
        start_paused: true,
        netns: None,
    };
    let mut vm = Vm::start(spec).await.unwrap();
    let mut qmp = vm.qmp().await.unwrap();
    assert_eq!(
        qmp.status().await.unwrap(),
        "prelaunch",
        "-S means powered off"
    );

    qmp.execute("cont", None).await.unwrap();
    assert_eq!(qmp.status().await.unwrap(), "running");

    qmp.execute("system_reset", None).await.unwrap();
    qmp.execute("stop", None).await.unwrap();
    assert_eq!(qmp.status().await.unwrap(), "paused");
    let events = qmp.take_events();
    assert!(
        events.iter().any(|e| e["event"] == "RESET"),
        "a reset emits RESET: {events:?}"
    );

    let unknown = qmp.execute("no-such-command", None).await.unwrap_err();
    assert!(unknown.to_string().contains("CommandNotFound"), "{unknown}");

    // `quit` is a hard power-off: the process ends.
    let _ = qmp.execute("quit", None).await;
    vm.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(vm.has_exited());
}
