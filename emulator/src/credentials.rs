//! Shared access policies and the emulator's well-known development credentials.
//!
//! A new IoT Hub comes with five shared access policies (iothub-protocol.md 7.3). The emulator
//! creates the same five, with **fixed keys published in this file**, so that a connection
//! string printed today still works after a restart, on another machine or in CI, the way
//! Azurite's well-known `devstoreaccount1` key does (anchors.md 3.9, item 2).
//!
//! These keys are development credentials and **public by design**. They protect nothing: never
//! reuse them for a real hub, and never expose the emulator on a network you do not trust. A
//! config file can replace them (`[policies.<name>]`).

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// The permissions a shared access policy grants (iothub-protocol.md 7.3).
///
/// A small bit set: combine with `|`, test with [`Permissions::contains`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission at all.
    pub const NONE: Permissions = Permissions(0);
    /// Read the identity registry.
    pub const REGISTRY_READ: Permissions = Permissions(1);
    /// Create, update and delete identities in the registry.
    pub const REGISTRY_WRITE: Permissions = Permissions(1 << 1);
    /// Service endpoints: send C2D, receive feedback and D2C, twins and queries.
    pub const SERVICE_CONNECT: Permissions = Permissions(1 << 2);
    /// Device endpoints on behalf of any device: D2C, receive C2D, twin.
    pub const DEVICE_CONNECT: Permissions = Permissions(1 << 3);
    /// Every permission (the `iothubowner` policy).
    pub const ALL: Permissions = Permissions(0b1111);

    const NAMES: [(Permissions, &'static str); 4] = [
        (Permissions::REGISTRY_READ, "RegistryRead"),
        (Permissions::REGISTRY_WRITE, "RegistryWrite"),
        (Permissions::SERVICE_CONNECT, "ServiceConnect"),
        (Permissions::DEVICE_CONNECT, "DeviceConnect"),
    ];

    /// True when every permission in `other` is also in `self`.
    pub const fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions in `self` or in `other`.
    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// True when no permission is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the permissions set, as the Azure portal and REST API spell them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(p, _)| self.contains(*p))
            .map(|(_, name)| name)
    }
}

impl BitOr for Permissions {
    type Output = Permissions;

    fn bitor(self, rhs: Permissions) -> Permissions {
        self.union(rhs)
    }
}

impl BitOrAssign for Permissions {
    fn bitor_assign(&mut self, rhs: Permissions) {
        *self = self.union(rhs);
    }
}

/// Comma-separated names, the way the REST API lists `rights` (`"RegistryRead, ServiceConnect"`).
impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("None");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({self})")
    }
}

/// A hub-level shared access policy: a name, two base64 keys and what they grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy name, sent as `skn` in SAS tokens and `SharedAccessKeyName` in connection strings.
    pub name: String,
    /// Base64 of the primary key.
    pub primary_key: String,
    /// Base64 of the secondary key.
    pub secondary_key: String,
    /// What a token signed with either key may do.
    pub permissions: Permissions,
}

impl Policy {
    /// True when `key` (base64, as given) is this policy's primary or secondary key.
    pub fn has_key(&self, key: &str) -> bool {
        self.primary_key == key || self.secondary_key == key
    }
}

/// Name of the policy with every permission.
pub const IOTHUBOWNER: &str = "iothubowner";
/// Name of the ServiceConnect policy.
pub const SERVICE: &str = "service";
/// Name of the DeviceConnect policy.
pub const DEVICE: &str = "device";
/// Name of the RegistryRead policy.
pub const REGISTRY_READ: &str = "registryRead";
/// Name of the RegistryRead + RegistryWrite policy.
pub const REGISTRY_READ_WRITE: &str = "registryReadWrite";

/// The well-known policies: name, permissions, primary key, secondary key.
///
/// Each key is 32 random bytes, generated once and published here. PUBLIC DEVELOPMENT KEYS.
const WELL_KNOWN: [(&str, Permissions, &str, &str); 5] = [
    (
        IOTHUBOWNER,
        Permissions::ALL,
        "JKhuaqkm1MITMpoBZpWyP1QPHzRpnF7O0Le6yabQJgU=",
        "x+6aEHTRU82Qk/kYtcaqCdigaitw8jWSAUa7a//aSDs=",
    ),
    (
        SERVICE,
        Permissions::SERVICE_CONNECT,
        "tXvkooCG4y03wOZlJEhxD9bhcqsHuqFbsSJgMy97rcA=",
        "Zx1SFFaQ7ExWXGrarZgwwlH4RbaPq6ldNdWB/oTstac=",
    ),
    (
        DEVICE,
        Permissions::DEVICE_CONNECT,
        "o0sthl+tm5Tbue4Qyd5AMIUnrxgjBBauvlKN7lVpb4k=",
        "+pttOetPqZEOfaDIMnY4t2ee/CiZTt5MX6K9H60vuYs=",
    ),
    (
        REGISTRY_READ,
        Permissions::REGISTRY_READ,
        "B3zdjH8rlc2X0h8OauLKvK2FxZXJ41okuBdbkP4ZY7Q=",
        "ZvTI2Y00rZNoZHU9fU1DEhCGdr3ILZ3tksC+YO+UA2U=",
    ),
    (
        REGISTRY_READ_WRITE,
        Permissions::REGISTRY_READ.union(Permissions::REGISTRY_WRITE),
        "NydtZAmqgSApnbRoxHKDOm8UuD0pm55HcoSMYnEEaQc=",
        "q3/SOJbAkcjM2IuFcnvGlngB5Aigl2eEvheihADKybM=",
    ),
];

/// The five policies of a new hub, with the emulator's fixed, published development keys.
///
/// In the order `iothubowner`, `service`, `device`, `registryRead`, `registryReadWrite`.
pub fn well_known_policies() -> Vec<Policy> {
    WELL_KNOWN
        .iter()
        .map(|&(name, permissions, primary, secondary)| Policy {
            name: name.to_owned(),
            primary_key: primary.to_owned(),
            secondary_key: secondary.to_owned(),
            permissions,
        })
        .collect()
}

/// True when `name` is one of the five well-known policy names.
pub fn is_well_known_policy(name: &str) -> bool {
    WELL_KNOWN.iter().any(|(n, ..)| *n == name)
}

/// The names of the well-known policies, in order.
pub fn well_known_policy_names() -> impl Iterator<Item = &'static str> {
    WELL_KNOWN.iter().map(|(n, ..)| *n)
}

/// `HostName=<host>;SharedAccessKeyName=<policy>;SharedAccessKey=<primary key>`
/// (iothub-protocol.md 7.5; Node requires all three parts).
pub fn service_connection_string(host: &str, policy: &Policy) -> String {
    format!(
        "HostName={host};SharedAccessKeyName={};SharedAccessKey={}",
        policy.name, policy.primary_key
    )
}

/// The Event Hubs-compatible connection string of the built-in endpoint (iothub-beyond-c2d.md
/// 3.2): `Endpoint=sb://<host>/;SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=<hub>`.
/// With `development_port`, the `UseDevelopmentEmulator=true` form (plain AMQP); the port is
/// written only when it is not the clients' default 5672, because `@azure/core-amqp` 4.3 does
/// not split a port out of the endpoint.
pub fn eventhub_connection_string(
    host: &str,
    hub_name: &str,
    policy: &Policy,
    development_port: Option<u16>,
) -> String {
    let endpoint = match development_port {
        Some(p) if p != 5672 => format!("{host}:{p}"),
        _ => host.to_owned(),
    };
    let mut cs = format!(
        "Endpoint=sb://{endpoint}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={hub_name}",
        policy.name, policy.primary_key
    );
    if development_port.is_some() {
        cs.push_str(";UseDevelopmentEmulator=true");
    }
    cs
}

/// `HostName=<host>;DeviceId=<id>;SharedAccessKey=<key>` (iothub-protocol.md 7.5).
pub fn device_connection_string(host: &str, device_id: &str, key: &str) -> String {
    format!("HostName={host};DeviceId={device_id};SharedAccessKey={key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn the_five_policies_with_their_permissions() {
        let policies = well_known_policies();
        let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iothubowner",
                "service",
                "device",
                "registryRead",
                "registryReadWrite"
            ]
        );
        let perms = |name: &str| {
            policies
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.permissions)
        };
        assert_eq!(perms("iothubowner"), Some(Permissions::ALL));
        assert_eq!(perms("service"), Some(Permissions::SERVICE_CONNECT));
        assert_eq!(perms("device"), Some(Permissions::DEVICE_CONNECT));
        assert_eq!(perms("registryRead"), Some(Permissions::REGISTRY_READ));
        assert_eq!(
            perms("registryReadWrite"),
            Some(Permissions::REGISTRY_READ | Permissions::REGISTRY_WRITE)
        );
        assert!(names.iter().all(|n| is_well_known_policy(n)));
        assert!(!is_well_known_policy("owner"));
    }

    #[test]
    fn keys_are_32_byte_base64_and_all_different() {
        let policies = well_known_policies();
        let mut seen = std::collections::HashSet::new();
        for p in &policies {
            for key in [&p.primary_key, &p.secondary_key] {
                let bytes = STANDARD.decode(key).expect("base64");
                assert_eq!(bytes.len(), 32, "{} key", p.name);
                assert!(seen.insert(key.clone()), "{} reuses a key", p.name);
            }
            assert!(p.has_key(&p.primary_key) && p.has_key(&p.secondary_key));
        }
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn permissions_set_operations_and_display() {
        let rw = Permissions::REGISTRY_READ | Permissions::REGISTRY_WRITE;
        assert!(rw.contains(Permissions::REGISTRY_READ));
        assert!(!rw.contains(Permissions::SERVICE_CONNECT));
        assert!(Permissions::ALL.contains(rw | Permissions::DEVICE_CONNECT));
        assert!(rw.contains(Permissions::NONE));
        assert_eq!(rw.to_string(), "RegistryRead, RegistryWrite");
        assert_eq!(Permissions::NONE.to_string(), "None");
        let mut p = Permissions::NONE;
        p |= Permissions::SERVICE_CONNECT;
        assert_eq!(format!("{p:?}"), "Permissions(ServiceConnect)");
    }

    #[test]
    fn connection_strings() {
        let owner = &well_known_policies()[0];
        assert_eq!(
            service_connection_string("localhost", owner),
            format!(
                "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={}",
                owner.primary_key
            )
        );
        assert_eq!(
            device_connection_string("hub.azure-devices.localhost", "d1", "a2V5"),
            "HostName=hub.azure-devices.localhost;DeviceId=d1;SharedAccessKey=a2V5"
        );
    }
}
