//! The controller's own dnsmasq (`--dnsmasq`) in a network namespace: a node that
//! is deploying gets a DHCP offer with the iPXE boot script; an unknown MAC, and the
//! node once undeployed, get nothing.
//!
//! Needs root (network namespaces) and dnsmasq (Debian: `dnsmasq-base`); without
//! them the test says so and passes without checking anything. The DHCP client is
//! in the test: DISCOVERs built with `dhcproto` are sent from a second namespace.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Controller;
use dhcproto::v4::{self, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use serde_json::json;

const KNOWN: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x01];
const UNKNOWN: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x02];

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {}", args.join(" "));
}

/// Two namespaces joined by a veth pair; removed on drop, even on panic, after
/// killing the processes (dnsmasq) the test left in them.
struct Lab {
    server: String,
    client: String,
}

impl Lab {
    fn new(subnet: u8) -> Self {
        let id = std::process::id();
        let lab = Self {
            server: format!("icd-s-{id}"),
            client: format!("icd-c-{id}"),
        };
        for ns in [&lab.server, &lab.client] {
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "link",
            "add",
            "icd-s",
            "netns",
            &lab.server,
            "type",
            "veth",
            "peer",
            "name",
            "icd-c",
            "netns",
            &lab.client,
        ]);
        let address = format!("10.77.{subnet}.1/24");
        ip(&["-n", &lab.server, "addr", "add", &address, "dev", "icd-s"]);
        for (ns, dev) in [(&lab.server, "icd-s"), (&lab.client, "icd-c")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // The client side needs an address for the kernel to deliver the broadcast
        // offers to a UDP socket (a real DHCP client would use a packet socket); it
        // is outside the DHCP range and plays no part in the exchange.
        let client = format!("10.77.{subnet}.254/24");
        ip(&["-n", &lab.client, "addr", "add", &client, "dev", "icd-c"]);
        ip(&["-n", &lab.client, "route", "add", "default", "dev", "icd-c"]);
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sends a DISCOVER for `mac` (as iPXE: option 175) from the client namespace and
/// returns the OFFER, if one comes within `wait`.
fn discover(namespace: &str, mac: [u8; 6], wait: Duration) -> Option<Message> {
    let path = format!("/run/netns/{namespace}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // setns affects only this thread.
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68)).unwrap();
                socket.set_broadcast(true).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut message = Message::new(
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    &mac,
                );
                message.set_flags(Flags::default().set_broadcast());
                let opts = message.opts_mut();
                opts.insert(DhcpOption::MessageType(MessageType::Discover));
                opts.insert(DhcpOption::ParameterRequestList(vec![
                    OptionCode::SubnetMask,
                    OptionCode::Router,
                    OptionCode::BootfileName,
                    OptionCode::from(175),
                ]));
                opts.insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::from(175),
                    vec![0x13, 0x01, 0x01], // iPXE: HTTP supported
                )));
                let mut bytes = Vec::new();
                message.encode(&mut Encoder::new(&mut bytes)).unwrap();
                let started = Instant::now();
                let mut buffer = [0u8; 1500];
                while started.elapsed() < wait {
                    socket.send_to(&bytes, (Ipv4Addr::BROADCAST, 67)).unwrap();
                    let until = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < until {
                        let Ok((n, _)) = socket.recv_from(&mut buffer) else {
                            continue;
                        };
                        let Ok(reply) = Message::decode(&mut Decoder::new(&buffer[..n])) else {
                            continue;
                        };
                        if reply.xid() == message.xid() && reply.opcode() == v4::Opcode::BootReply {
                            return Some(reply);
                        }
                    }
                }
                None
            })
            .join()
            .unwrap()
    })
}

fn boot_file(offer: &Message) -> String {
    if let Some(DhcpOption::BootfileName(name)) = offer.opts().get(OptionCode::BootfileName) {
        return String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_owned();
    }
    offer
        .fname_str()
        .and_then(Result::ok)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn dnsmasq_offers_the_boot_script_only_to_nodes_that_network_boot() {
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()),
        0,
        "this test needs root for network namespaces"
    );
    let dnsmasq = which("dnsmasq")
        .expect("dnsmasq is not installed: run ./scripts/setup (Debian package dnsmasq-base)");
    let subnet = (std::process::id() % 200) as u8 + 20;
    let lab = Lab::new(subnet);
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("dnsmasq-in-ns");
    std::fs::write(
        &wrapper,
        format!(
            // nsenter execs without forking, so dnsmasq stays the controller's child.
            "#!/bin/sh\nexec nsenter --net=/run/netns/{} {} \"$@\"\n",
            lab.server, dnsmasq
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let public = format!("http://10.77.{subnet}.1:6385");
    let range = format!("10.77.{subnet}.10,10.77.{subnet}.50,255.255.255.0,1h");
    let mut c = Controller::start(
        dir.path(),
        &[
            "--dnsmasq",
            "--dhcp-interface",
            "icd-s",
            "--dhcp-range",
            &range,
            "--dnsmasq-program",
            wrapper.to_str().unwrap(),
            "--public-url",
            &public,
        ],
    );
    let mac = KNOWN
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let node = c
        .create_node(json!({
            "driver": "fake-hardware", "boot_interface": "ipxe",
            "driver_info": {"deploy_kernel": "k", "deploy_ramdisk": "r"},
            "instance_info": {"image_source": "http://x/img.raw", "image_checksum": "abc"}
        }))
        .await;
    c.post("/v1/ports", json!({"node_uuid": node, "address": mac}))
        .await;

    // Not network booting yet: nothing for the known MAC either.
    let client = lab.client.clone();
    let none =
        tokio::task::spawn_blocking(move || discover(&client, KNOWN, Duration::from_millis(1500)))
            .await
            .unwrap();
    assert!(none.is_none(), "offer before deploy: {none:?}");

    for target in ["manage", "provide", "active"] {
        c.provision(&node, target).await;
        c.wait_unlocked(&node).await;
    }
    c.wait_state(&node, "wait call-back").await;

    let client = lab.client.clone();
    let offer =
        tokio::task::spawn_blocking(move || discover(&client, KNOWN, Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("an offer for the deploying node");
    assert_eq!(
        offer.opts().msg_type(),
        Some(MessageType::Offer),
        "{offer:?}"
    );
    let offered = offer.yiaddr().octets();
    assert_eq!(offered[..3], [10, 77, subnet], "{offer:?}");
    assert_eq!(boot_file(&offer), format!("{public}/boot.ipxe"));
    // iPXE's encapsulated 175.176 = 1: no waiting for ProxyDHCP.
    let encapsulated = offer.opts().get(OptionCode::from(175));
    assert!(
        matches!(encapsulated, Some(DhcpOption::Unknown(o)) if o.data().starts_with(&[176, 1, 1])),
        "option 175: {encapsulated:?}"
    );

    // A restart empties the hostsdir; the controller writes back what is needed.
    c.restart();
    let client = lab.client.clone();
    let again =
        tokio::task::spawn_blocking(move || discover(&client, KNOWN, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(again.is_some(), "no offer after a controller restart");

    let client = lab.client.clone();
    let unknown = tokio::task::spawn_blocking(move || {
        discover(&client, UNKNOWN, Duration::from_millis(1500))
    })
    .await
    .unwrap();
    assert!(unknown.is_none(), "offer for an unknown MAC: {unknown:?}");

    // Undeployed: the MAC is ignored again.
    c.provision(&node, "deleted").await;
    c.wait_state(&node, "available").await;
    let client = lab.client.clone();
    let after =
        tokio::task::spawn_blocking(move || discover(&client, KNOWN, Duration::from_millis(1500)))
            .await
            .unwrap();
    assert!(after.is_none(), "offer after undeploy: {after:?}");
    // Even a killed controller takes its dnsmasq down with it (parent-death signal).
    drop(c);
    let started = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["netns", "pids", &lab.server])
            .output()
            .unwrap();
        // Zombies (dead, not yet reaped by init) count as gone.
        let alive = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|stat| {
                        stat.rsplit_once(')')
                            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(false)
            });
        if !alive {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "dnsmasq outlived the controller: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn which(program: &str) -> Result<String, ()> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let path = format!("{dir}/{program}");
        if std::path::Path::new(&path).exists() {
            return Ok(path);
        }
    }
    Err(())
}
