//! Controller API microversions: `X-OpenStack-Ironic-API-Version` negotiation and
//! the table of which version introduced which field.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// Request and response header carrying the negotiated version.
pub const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";
/// Response header carrying the lowest supported version.
pub const MIN_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Minimum-Version";
/// Response header carrying the highest supported version.
pub const MAX_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Maximum-Version";
/// The generic OpenStack header (`OpenStack-API-Version: baremetal 1.N`).
pub const GENERIC_VERSION_HEADER: &str = "OpenStack-API-Version";

/// A `major.minor` API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major version (always 1).
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl ApiVersion {
    /// Builds a version.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }
}

/// The lowest version the controller serves; also what a request without a header gets.
pub const MIN_VERSION: ApiVersion = ApiVersion::new(1, 1);
/// The highest version the controller serves.
pub const MAX_VERSION: ApiVersion = ApiVersion::new(1, 95);

/// Version from which the ramdisk endpoints (lookup, heartbeat) exist.
pub const RAMDISK_API: ApiVersion = ApiVersion::new(1, 22);
/// Version from which heartbeats carry `agent_version`.
pub const AGENT_VERSION_IN_HEARTBEAT: ApiVersion = ApiVersion::new(1, 36);
/// Version from which lookup mints agent tokens and heartbeats carry them.
pub const AGENT_TOKEN: ApiVersion = ApiVersion::new(1, 62);
/// Version from which heartbeats carry `agent_verify_ca` (auto-TLS).
pub const AGENT_VERIFY_CA: ApiVersion = ApiVersion::new(1, 68);
/// Version from which heartbeats carry `agent_status`.
pub const AGENT_STATUS: ApiVersion = ApiVersion::new(1, 72);
/// Highest version an agent uses for lookup (IPA's cap).
pub const AGENT_LOOKUP_CAP: ApiVersion = AGENT_TOKEN;
/// Highest version an agent uses for heartbeat (IPA's cap).
pub const AGENT_HEARTBEAT_CAP: ApiVersion = AGENT_VERIFY_CA;
/// What an agent assumes when the controller's root document cannot be read.
pub const AGENT_FALLBACK_VERSION: ApiVersion = ApiVersion::new(1, 31);

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a requested version cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The header is not `major.minor` or `latest`.
    #[error("Invalid value for {VERSION_HEADER} header: {0:?}")]
    Malformed(String),
    /// The version is outside what the controller serves (HTTP 406).
    #[error("Version {requested} was requested but the minimum supported version is {MIN_VERSION} and the maximum supported version is {MAX_VERSION}")]
    OutOfRange {
        /// The version asked for.
        requested: ApiVersion,
    },
}

impl FromStr for ApiVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || VersionError::Malformed(s.to_owned());
        let (major, minor) = s.trim().split_once('.').ok_or_else(malformed)?;
        Ok(Self {
            major: major.parse().map_err(|_| malformed())?,
            minor: minor.parse().map_err(|_| malformed())?,
        })
    }
}

/// Picks the version for a request from its headers.
///
/// `ironic_header` is `X-OpenStack-Ironic-API-Version`, `generic_header` is
/// `OpenStack-API-Version` (only its `baremetal` entry counts). No header means
/// the minimum version; `latest` means the maximum.
pub fn negotiate(
    ironic_header: Option<&str>,
    generic_header: Option<&str>,
) -> Result<ApiVersion, VersionError> {
    let generic = generic_header.and_then(|h| {
        h.split(',')
            .filter_map(|part| part.trim().strip_prefix("baremetal "))
            .next()
            .map(str::trim)
    });
    let requested = match ironic_header.map(str::trim).or(generic) {
        None | Some("") => return Ok(MIN_VERSION),
        Some(v) if v.eq_ignore_ascii_case("latest") => return Ok(MAX_VERSION),
        Some(v) => v.parse::<ApiVersion>()?,
    };
    if requested < MIN_VERSION || requested > MAX_VERSION {
        return Err(VersionError::OutOfRange { requested });
    }
    Ok(requested)
}

/// Node fields and the version that introduced each. Fields not listed exist since 1.1.
pub const NODE_FIELD_VERSIONS: &[(&str, ApiVersion)] = &[
    ("driver_internal_info", ApiVersion::new(1, 3)),
    ("name", ApiVersion::new(1, 5)),
    ("inspection_finished_at", ApiVersion::new(1, 6)),
    ("inspection_started_at", ApiVersion::new(1, 6)),
    ("clean_step", ApiVersion::new(1, 7)),
    ("raid_config", ApiVersion::new(1, 12)),
    ("target_raid_config", ApiVersion::new(1, 12)),
    ("network_interface", ApiVersion::new(1, 20)),
    ("resource_class", ApiVersion::new(1, 21)),
    ("boot_interface", ApiVersion::new(1, 31)),
    ("console_interface", ApiVersion::new(1, 31)),
    ("deploy_interface", ApiVersion::new(1, 31)),
    ("inspect_interface", ApiVersion::new(1, 31)),
    ("management_interface", ApiVersion::new(1, 31)),
    ("power_interface", ApiVersion::new(1, 31)),
    ("raid_interface", ApiVersion::new(1, 31)),
    ("vendor_interface", ApiVersion::new(1, 31)),
    ("storage_interface", ApiVersion::new(1, 33)),
    ("traits", ApiVersion::new(1, 37)),
    ("rescue_interface", ApiVersion::new(1, 38)),
    ("bios_interface", ApiVersion::new(1, 40)),
    ("fault", ApiVersion::new(1, 42)),
    ("deploy_step", ApiVersion::new(1, 44)),
    ("conductor_group", ApiVersion::new(1, 46)),
    ("automated_clean", ApiVersion::new(1, 47)),
    ("protected", ApiVersion::new(1, 48)),
    ("protected_reason", ApiVersion::new(1, 48)),
    ("conductor", ApiVersion::new(1, 49)),
    ("owner", ApiVersion::new(1, 50)),
    ("description", ApiVersion::new(1, 51)),
    ("allocation_uuid", ApiVersion::new(1, 52)),
    ("retired", ApiVersion::new(1, 61)),
    ("retired_reason", ApiVersion::new(1, 61)),
    ("lessee", ApiVersion::new(1, 65)),
    ("network_data", ApiVersion::new(1, 66)),
    ("boot_mode", ApiVersion::new(1, 75)),
    ("secure_boot", ApiVersion::new(1, 75)),
    ("shard", ApiVersion::new(1, 82)),
    ("parent_node", ApiVersion::new(1, 83)),
    ("firmware_interface", ApiVersion::new(1, 86)),
    ("service_step", ApiVersion::new(1, 87)),
    ("disable_power_off", ApiVersion::new(1, 95)),
];

/// Port fields and the version that introduced each. Fields not listed exist since 1.1.
pub const PORT_FIELD_VERSIONS: &[(&str, ApiVersion)] = &[
    ("internal_info", ApiVersion::new(1, 18)),
    ("local_link_connection", ApiVersion::new(1, 19)),
    ("pxe_enabled", ApiVersion::new(1, 19)),
    ("portgroup_uuid", ApiVersion::new(1, 24)),
    ("physical_network", ApiVersion::new(1, 34)),
    ("is_smartnic", ApiVersion::new(1, 53)),
    ("name", ApiVersion::new(1, 88)),
];

/// The version that introduced `field` according to `table` (1.1 when not listed).
pub fn introduced_in(table: &[(&str, ApiVersion)], field: &str) -> ApiVersion {
    table
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(MIN_VERSION, |(_, v)| *v)
}

/// Removes from `object` every field newer than `version`.
pub fn strip_newer_fields(
    table: &[(&str, ApiVersion)],
    object: &mut Map<String, Value>,
    version: ApiVersion,
) {
    object.retain(|field, _| introduced_in(table, field) <= version);
}

/// The first field of `fields` that is newer than `version`, if any (POST/PATCH give 406 for it).
pub fn first_newer_field<'a>(
    table: &[(&str, ApiVersion)],
    fields: impl IntoIterator<Item = &'a str>,
    version: ApiVersion,
) -> Option<&'a str> {
    fields
        .into_iter()
        .find(|field| introduced_in(table, field) > version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_header_means_minimum_and_latest_means_maximum() {
        assert_eq!(negotiate(None, None), Ok(MIN_VERSION));
        assert_eq!(negotiate(Some("latest"), None), Ok(MAX_VERSION));
        assert_eq!(negotiate(Some("1.62"), None), Ok(ApiVersion::new(1, 62)));
        assert_eq!(
            negotiate(None, Some("compute 2.1, baremetal 1.68")),
            Ok(ApiVersion::new(1, 68))
        );
    }

    #[test]
    fn out_of_range_and_garbage_are_refused() {
        assert!(matches!(
            negotiate(Some("1.999"), None),
            Err(VersionError::OutOfRange { .. })
        ));
        assert!(matches!(
            negotiate(Some("2.0"), None),
            Err(VersionError::OutOfRange { .. })
        ));
        assert!(matches!(
            negotiate(Some("one.two"), None),
            Err(VersionError::Malformed(_))
        ));
    }

    #[test]
    fn versions_order_numerically() {
        assert!(ApiVersion::new(1, 9) < ApiVersion::new(1, 10));
        assert_eq!("1.68".parse::<ApiVersion>(), Ok(ApiVersion::new(1, 68)));
    }

    #[test]
    fn newer_fields_are_dropped() {
        let mut node = serde_json::json!({
            "uuid": "u", "name": "n", "traits": [], "network_data": {}, "driver_internal_info": {}
        });
        let map = node.as_object_mut().unwrap();
        strip_newer_fields(NODE_FIELD_VERSIONS, map, ApiVersion::new(1, 37));
        let mut keys: Vec<_> = map.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["driver_internal_info", "name", "traits", "uuid"]);
        assert_eq!(
            first_newer_field(
                NODE_FIELD_VERSIONS,
                ["name", "owner"],
                ApiVersion::new(1, 40)
            ),
            Some("owner")
        );
    }
}
