//! The kernel's `ip=` parameter (Documentation/admin-guide/nfs/nfsroot.rst):
//! `ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>`,
//! or just `ip=dhcp` / `ip=off`. IPv6 addresses may be written in brackets
//! (`[fd00::5]`), as dracut does; a netmask may also be a prefix length.

use std::net::{IpAddr, Ipv4Addr};

/// What `ip=` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpParam {
    /// No `ip=`, or `ip=dhcp|on|any|both|bootp|rarp`: DHCP (on `device` only, when named).
    Dhcp {
        /// The one interface to use, when named.
        device: Option<String>,
    },
    /// `ip=off|none`: configure nothing.
    Off,
    /// A static address.
    Static(StaticIp),
}

/// A static configuration from `ip=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<IpAddr>,
    /// The host name.
    pub hostname: Option<String>,
    /// The interface (default: the boot interface, else the first with a carrier).
    pub device: Option<String>,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
}

/// Why `ip=` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpParamError {
    /// A field does not parse.
    #[error("ip=: {field} {value:?} is not valid; expected ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip> or ip=dhcp")]
    BadField {
        /// Which field.
        field: &'static str,
        /// Its text.
        value: String,
    },
}

/// Splits on `:` outside brackets, dropping the brackets.
fn split_fields(value: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut bracket = false;
    for c in value.chars() {
        match c {
            '[' => bracket = true,
            ']' => bracket = false,
            ':' if !bracket => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

fn bad(field: &'static str, value: &str) -> IpParamError {
    IpParamError::BadField {
        field,
        value: value.to_owned(),
    }
}

fn optional_ip(field: &'static str, value: &str) -> Result<Option<IpAddr>, IpParamError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| bad(field, value))
}

/// Prefix length of a dotted netmask (`255.255.255.0` → 24), or a bare prefix length.
pub fn prefix_len(netmask: &str, address: IpAddr) -> Option<u8> {
    if let Ok(n) = netmask.parse::<u8>() {
        let max = if address.is_ipv4() { 32 } else { 128 };
        return (n <= max).then_some(n);
    }
    let mask: Ipv4Addr = netmask.parse().ok()?;
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The natural prefix when no netmask is given (class A/B/C for IPv4, /64 for IPv6).
fn default_prefix(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(v4) => match v4.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
        IpAddr::V6(_) => 64,
    }
}

/// Parses the value of `ip=`.
pub fn parse_ip_param(value: &str) -> Result<IpParam, IpParamError> {
    let dhcp_words = [
        "dhcp", "on", "any", "both", "bootp", "rarp", "dhcp6", "auto6",
    ];
    match value {
        v if dhcp_words.contains(&v) => return Ok(IpParam::Dhcp { device: None }),
        "off" | "none" => return Ok(IpParam::Off),
        _ => {}
    }
    let fields = split_fields(value);
    let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
    let device = Some(field(5).to_owned()).filter(|d| !d.is_empty());
    let autoconf = field(6);
    if dhcp_words.contains(&autoconf) {
        return Ok(IpParam::Dhcp { device });
    }
    if field(0).is_empty() {
        return match autoconf {
            "" => Ok(IpParam::Dhcp { device }),
            "off" | "none" => Ok(IpParam::Off),
            other => Err(bad("autoconf", other)),
        };
    }
    let address: IpAddr = field(0).parse().map_err(|_| bad("client-ip", field(0)))?;
    let prefix = if field(3).is_empty() {
        default_prefix(address)
    } else {
        prefix_len(field(3), address).ok_or_else(|| bad("netmask", field(3)))?
    };
    let mut dns = Vec::new();
    for (name, i) in [("dns0-ip", 7), ("dns1-ip", 8)] {
        if let Some(ip) = optional_ip(name, field(i))? {
            dns.push(ip);
        }
    }
    Ok(IpParam::Static(StaticIp {
        address,
        prefix,
        gateway: optional_ip("gw-ip", field(2))?,
        hostname: Some(field(4).to_owned()).filter(|h| !h.is_empty()),
        device,
        dns,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_and_off() {
        assert_eq!(parse_ip_param("dhcp"), Ok(IpParam::Dhcp { device: None }));
        assert_eq!(parse_ip_param("off"), Ok(IpParam::Off));
        assert_eq!(
            parse_ip_param(":::::eth1:dhcp"),
            Ok(IpParam::Dhcp {
                device: Some("eth1".into())
            })
        );
    }

    #[test]
    fn full_static_form() {
        let p = parse_ip_param(
            "192.168.10.5:192.168.10.1:192.168.10.1:255.255.255.0:node1:eth0:off:10.0.0.53:10.0.0.54",
        )
        .unwrap();
        assert_eq!(
            p,
            IpParam::Static(StaticIp {
                address: "192.168.10.5".parse().unwrap(),
                prefix: 24,
                gateway: Some("192.168.10.1".parse().unwrap()),
                hostname: Some("node1".into()),
                device: Some("eth0".into()),
                dns: vec!["10.0.0.53".parse().unwrap(), "10.0.0.54".parse().unwrap()],
            })
        );
    }

    #[test]
    fn short_and_ipv6_forms() {
        let IpParam::Static(s) = parse_ip_param("10.1.2.3").unwrap() else {
            panic!("static expected")
        };
        assert_eq!((s.prefix, s.gateway, s.device), (8, None, None));
        let IpParam::Static(s) = parse_ip_param("[fd00::5]::[fd00::1]:64::ens3").unwrap() else {
            panic!("static expected")
        };
        assert_eq!(s.address, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(s.gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(s.prefix, 64);
        assert_eq!(s.device.as_deref(), Some("ens3"));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse_ip_param("10.0.0.300").is_err());
        assert!(parse_ip_param("10.0.0.3::10.0.0.1:255.0.255.0").is_err());
        assert!(parse_ip_param("10.0.0.3::gateway").is_err());
        assert_eq!(
            prefix_len("255.255.240.0", "10.0.0.1".parse().unwrap()),
            Some(20)
        );
        assert_eq!(prefix_len("20", "10.0.0.1".parse().unwrap()), Some(20));
    }
}
