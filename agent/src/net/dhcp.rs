//! A DHCPv4 client built on `dhcproto` messages over an ordinary UDP socket
//! bound to `0.0.0.0:68` on one interface (`SO_BINDTODEVICE`, `SO_BROADCAST`):
//! DISCOVER → OFFER → REQUEST → ACK, then renewals at T1 and rebinding at T2.
//!
//! Messages are built with our own transaction id ([`Message::new_with_id`]):
//! `Message::new` draws a random id with a blocking `getrandom`, which stalls
//! early boot until the kernel's pool is ready.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// DHCP server port.
const SERVER_PORT: u16 = 67;
/// DHCP client port.
const CLIENT_PORT: u16 = 68;

/// Why DHCP failed on an interface.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The socket could not be set up.
    #[error("DHCP socket on {ifname}: {source}")]
    Socket {
        /// The interface.
        ifname: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No server answered in time.
    #[error("no DHCP answer on {ifname} within {timeout:?}; is a DHCP server on that network?")]
    Timeout {
        /// The interface.
        ifname: String,
        /// How long we tried.
        timeout: Duration,
    },
    /// The server refused the request.
    #[error("the DHCP server {server} refused our request on {ifname} (NAK)")]
    Nak {
        /// The interface.
        ifname: String,
        /// Who said no.
        server: Ipv4Addr,
    },
    /// A message could not be encoded.
    #[error("encoding a DHCP message: {0}")]
    Encode(String),
}

/// An address lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// Routers, first is the default gateway.
    pub routers: Vec<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted the lease.
    pub server: Ipv4Addr,
    /// Lease duration.
    pub lease_time: Duration,
    /// When to renew (T1), from the start of the lease.
    pub renew_after: Duration,
    /// When to rebind (T2), from the start of the lease.
    pub rebind_after: Duration,
    /// Interface MTU, when offered.
    pub mtu: Option<u16>,
    /// Host name, when offered.
    pub hostname: Option<String>,
}

/// A transaction id from the clock and the MAC (no blocking `getrandom`).
pub fn transaction_id(mac: &[u8; 6], salt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    nanos ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ salt.rotate_left(16)
}

fn base_message(xid: u32, mac: &[u8; 6], kind: MessageType) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, mac);
    msg.set_opcode(Opcode::BootRequest);
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::InterfaceMtu,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    msg
}

/// A DHCPDISCOVER.
pub fn discover(xid: u32, mac: &[u8; 6]) -> Message {
    base_message(xid, mac, MessageType::Discover)
}

/// A DHCPREQUEST selecting `offer` (SELECTING state).
pub fn request_for_offer(xid: u32, mac: &[u8; 6], offer: &Message) -> Message {
    let mut msg = base_message(xid, mac, MessageType::Request);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    if let Some(DhcpOption::ServerIdentifier(server)) =
        offer.opts().get(OptionCode::ServerIdentifier)
    {
        opts.insert(DhcpOption::ServerIdentifier(*server));
    }
    msg
}

/// A DHCPREQUEST extending `lease` (RENEWING/REBINDING: `ciaddr` set, no server id).
pub fn request_renewal(xid: u32, mac: &[u8; 6], lease: &Lease) -> Message {
    let mut msg = base_message(xid, mac, MessageType::Request);
    msg.set_ciaddr(lease.address);
    msg.set_flags(Flags::default());
    msg
}

fn mask_prefix(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// The lease an ACK (or an OFFER, for display) grants, if it grants one.
pub fn lease_from(msg: &Message) -> Option<Lease> {
    let address = msg.yiaddr();
    if address.is_unspecified() {
        return None;
    }
    let opts = msg.opts();
    let mut lease = Lease {
        address,
        prefix: 24,
        routers: Vec::new(),
        dns: Vec::new(),
        server: msg.siaddr(),
        lease_time: Duration::from_secs(3600),
        renew_after: Duration::ZERO,
        rebind_after: Duration::ZERO,
        mtu: None,
        hostname: None,
    };
    let mut renew = None;
    let mut rebind = None;
    for (_, option) in opts.iter() {
        match option {
            DhcpOption::SubnetMask(mask) => lease.prefix = mask_prefix(*mask),
            DhcpOption::Router(routers) => lease.routers = routers.clone(),
            DhcpOption::DomainNameServer(dns) => lease.dns = dns.clone(),
            DhcpOption::ServerIdentifier(server) => lease.server = *server,
            DhcpOption::AddressLeaseTime(secs) => {
                lease.lease_time = Duration::from_secs(u64::from(*secs));
            }
            DhcpOption::Renewal(secs) => renew = Some(Duration::from_secs(u64::from(*secs))),
            DhcpOption::Rebinding(secs) => rebind = Some(Duration::from_secs(u64::from(*secs))),
            DhcpOption::InterfaceMtu(mtu) => lease.mtu = Some(*mtu),
            DhcpOption::Hostname(name) => lease.hostname = Some(name.clone()),
            _ => {}
        }
    }
    // RFC 2131 §4.4.5 defaults: T1 = 0.5 × lease, T2 = 0.875 × lease.
    lease.renew_after = renew.unwrap_or(lease.lease_time / 2);
    lease.rebind_after = rebind.unwrap_or(lease.lease_time.mul_f64(0.875));
    Some(lease)
}

fn encode(msg: &Message) -> Result<Vec<u8>, DhcpError> {
    let mut buf = Vec::with_capacity(576);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| DhcpError::Encode(e.to_string()))?;
    Ok(buf)
}

/// A UDP socket on port 68 bound to one interface.
pub fn client_socket(ifname: &str) -> Result<UdpSocket, DhcpError> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let err = |source: std::io::Error| DhcpError::Socket {
        ifname: ifname.to_owned(),
        source,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(e.into()))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| err(e.into()))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(|e| err(e.into()))?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )
    .map_err(|e| err(e.into()))?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
    )
    .map_err(|e| err(e.into()))?;
    let std_socket = std::net::UdpSocket::from(fd);
    UdpSocket::from_std(std_socket).map_err(err)
}

/// Sends `msg` to `to` and waits for a reply of one of `kinds` with the same
/// xid, retransmitting with exponential back-off (1, 2, 4, ... s) until `deadline`.
async fn exchange(
    socket: &UdpSocket,
    ifname: &str,
    msg: &Message,
    to: SocketAddr,
    kinds: &[MessageType],
    deadline: Instant,
) -> Result<Message, DhcpError> {
    let bytes = encode(msg)?;
    let started = Instant::now();
    let mut wait = Duration::from_secs(1);
    let mut buf = vec![0u8; 1500];
    loop {
        if let Err(e) = socket.send_to(&bytes, to).await {
            tracing::debug!("DHCP send on {ifname}: {e}");
        }
        let resend_at = (Instant::now() + wait).min(deadline);
        loop {
            let received = tokio::time::timeout_at(resend_at, socket.recv_from(&mut buf)).await;
            let Ok(Ok((len, _from))) = received else {
                break;
            };
            let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..len])) else {
                continue;
            };
            if reply.xid() != msg.xid() || reply.opcode() != Opcode::BootReply {
                continue;
            }
            match reply.opts().msg_type() {
                Some(MessageType::Nak) => {
                    let server = match reply.opts().get(OptionCode::ServerIdentifier) {
                        Some(DhcpOption::ServerIdentifier(s)) => *s,
                        _ => reply.siaddr(),
                    };
                    return Err(DhcpError::Nak {
                        ifname: ifname.to_owned(),
                        server,
                    });
                }
                Some(kind) if kinds.contains(&kind) => return Ok(reply),
                _ => continue,
            }
        }
        if Instant::now() >= deadline {
            return Err(DhcpError::Timeout {
                ifname: ifname.to_owned(),
                timeout: started.elapsed(),
            });
        }
        wait = (wait * 2).min(Duration::from_secs(16));
    }
}

/// Runs DISCOVER/OFFER/REQUEST/ACK on `ifname` (up, no address needed).
pub async fn acquire(
    socket: &UdpSocket,
    ifname: &str,
    mac: &[u8; 6],
    timeout: Duration,
) -> Result<Lease, DhcpError> {
    let deadline = Instant::now() + timeout;
    let broadcast = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT));
    let xid = transaction_id(mac, 0);
    let offer = exchange(
        socket,
        ifname,
        &discover(xid, mac),
        broadcast,
        &[MessageType::Offer],
        deadline,
    )
    .await?;
    let ack = exchange(
        socket,
        ifname,
        &request_for_offer(xid, mac, &offer),
        broadcast,
        &[MessageType::Ack],
        deadline,
    )
    .await?;
    lease_from(&ack).ok_or_else(|| DhcpError::Timeout {
        ifname: ifname.to_owned(),
        timeout,
    })
}

/// Extends `lease`: unicast to its server (renewing) or broadcast (rebinding),
/// giving up at `deadline`.
pub async fn extend(
    socket: &UdpSocket,
    ifname: &str,
    mac: &[u8; 6],
    lease: &Lease,
    rebinding: bool,
    deadline: Instant,
) -> Result<Lease, DhcpError> {
    let to = if rebinding {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT)
    } else {
        SocketAddrV4::new(lease.server, SERVER_PORT)
    };
    let xid = transaction_id(mac, 1);
    let ack = exchange(
        socket,
        ifname,
        &request_renewal(xid, mac, lease),
        SocketAddr::V4(to),
        &[MessageType::Ack],
        deadline,
    )
    .await?;
    lease_from(&ack).ok_or_else(|| DhcpError::Timeout {
        ifname: ifname.to_owned(),
        timeout: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn roundtrip(msg: &Message) -> Message {
        let bytes = encode(msg).unwrap();
        Message::decode(&mut Decoder::new(&bytes)).unwrap()
    }

    fn server_reply(request: &Message, kind: MessageType) -> Message {
        let mut reply = Message::new_with_id(
            request.xid(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        reply.set_opcode(Opcode::BootReply);
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        opts.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        opts.insert(DhcpOption::AddressLeaseTime(86400));
        reply
    }

    #[test]
    fn discover_and_request_carry_what_servers_need() {
        let d = roundtrip(&discover(42, &MAC));
        assert_eq!(d.xid(), 42);
        assert_eq!(d.chaddr(), MAC);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert!(d.flags().broadcast());
        let offer = roundtrip(&server_reply(&d, MessageType::Offer));
        let r = roundtrip(&request_for_offer(42, &MAC, &offer));
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)))
        );
    }

    #[test]
    fn acks_become_leases() {
        let ack = roundtrip(&server_reply(&discover(7, &MAC), MessageType::Ack));
        let lease = lease_from(&ack).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.routers, [Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(lease.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.server, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(lease.renew_after, Duration::from_secs(43200));
        assert_eq!(lease.rebind_after, Duration::from_secs(75600));
        let renewal = roundtrip(&request_renewal(8, &MAC, &lease));
        assert_eq!(renewal.ciaddr(), lease.address);
        assert!(renewal.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn transaction_ids_vary() {
        assert_ne!(transaction_id(&MAC, 0), transaction_id(&MAC, 1));
    }
}
