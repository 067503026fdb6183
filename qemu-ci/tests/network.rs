//! The lab network: a namespace with a bridge and taps, created with `ip` and
//! removed on drop, including when the owner panics. Needs root.

#![allow(clippy::unwrap_used)]

use ironclad_qemu_ci::network::{self, LabNetwork, NetworkSpec};

fn require_root() {
    assert!(
        network::is_root(),
        "the network tests create network namespaces and need root; run `cargo test -p ironclad-qemu-ci` as root"
    );
}

fn unique(tag: &str) -> String {
    format!("icl-{tag}-{}", std::process::id() % 100_000)
}

#[test]
fn creates_namespace_bridge_and_taps_and_removes_them_on_drop() {
    require_root();
    let name = unique("net");
    let network = LabNetwork::create(NetworkSpec::new(&name, 2)).unwrap();
    assert!(network::namespaces().unwrap().contains(&name));
    let links = network.links().unwrap();
    for link in ["lo", "br0", "tap0", "tap1"] {
        assert!(links.iter().any(|l| l == link), "{link} in {links:?}");
    }
    let show = std::process::Command::new("ip")
        .args(["-n", &name, "-o", "addr", "show", "dev", "br0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("10.78.0.1/24"));
    let master = std::process::Command::new("ip")
        .args(["-n", &name, "-o", "link", "show", "tap1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&master.stdout).contains("master br0"));
    // Nothing leaked into the host's namespace.
    let host = std::process::Command::new("ip")
        .args(["-o", "link", "show", "tap1"])
        .output()
        .unwrap();
    assert!(!host.status.success(), "tap1 must not exist on the host");

    drop(network);
    assert!(!network::namespaces().unwrap().contains(&name));
}

#[test]
fn a_panicking_owner_still_removes_the_namespace() {
    require_root();
    let name = unique("pan");
    let inner = name.clone();
    let result = std::thread::spawn(move || {
        let _network = LabNetwork::create(NetworkSpec::new(&inner, 1)).unwrap();
        assert!(network::namespaces().unwrap().contains(&inner));
        panic!("a test failing halfway");
    })
    .join();
    assert!(result.is_err());
    assert!(!network::namespaces().unwrap().contains(&name));
}

#[test]
fn leftovers_are_cleaned_by_prefix_and_bad_names_refused() {
    require_root();
    let name = unique("lft");
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    let deleted = network::cleanup_leftovers(&name).unwrap();
    assert_eq!(deleted, vec![name.clone()]);
    assert!(!network::namespaces().unwrap().contains(&name));

    let too_long = NetworkSpec::new("a-name-far-too-long-for-linux", 0);
    assert!(LabNetwork::create(too_long).is_err());
    let mut bad = NetworkSpec::new(&unique("bad"), 0);
    bad.taps.push("tap 0; reboot".into());
    assert!(LabNetwork::create(bad).is_err());
}
