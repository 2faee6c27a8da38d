//! Who may do what: SAS tokens checked against policies and device keys.
//!
//! Reference: iothub-protocol.md 7.1–7.3. This is the only place that turns a token into a
//! [`Grant`]; adapters ask for one before any hub operation and map [`HubError`] to their
//! wire form.
//!
//! Every token, policy or device, grants only on resources under its `sr` (7.2): its host must
//! name this hub (case-insensitively: the host name, a certificate name, or any host whose
//! first label is the hub name, which is what a device behind `GatewayHostName` signs for),
//! and its path segments must be a prefix of the resource the operation acts on (the
//! [`Need::resource`]). A token for another hub, or for `{hub}/devices/a`, lists no devices
//! and sends nothing to device `b`.

use iothub_protocol::HubError;
use iothub_protocol::registry::DeviceStatus;
use iothub_protocol::sas::{SasError, SasToken};

use crate::credentials::{Permissions, Policy};
use crate::hub::{AuthMethod, Hub};

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// A policy with these permissions (registry and service operations).
    Permissions(Permissions),
    /// Device access for this device: its own key, or a policy with DeviceConnect.
    Device(&'a str),
    /// A policy with these permissions, on a resource below the hub (`devices/dev1`): a policy
    /// token scoped to that resource, or to a prefix of it, is enough.
    Scoped {
        /// The permissions.
        permissions: Permissions,
        /// The resource path without host, `/`-separated (`devices/dev1`).
        resource: &'a str,
    },
    /// Module access for `(device, module)`: the module's own key (a token for
    /// `{host}/devices/{id}/modules/{mid}`), or a policy with DeviceConnect whose scope covers
    /// it. The device's key never grants its modules, and a module's key never grants the
    /// device (its scope does not cover `devices/{id}`) or another module.
    Module(&'a str, &'a str),
}

impl Need<'_> {
    /// The resource the operation acts on, without host: the token's `sr` must cover it.
    /// Hub-wide operations act on the hub itself (an empty path), device access on
    /// `devices/{id}`.
    pub fn resource(&self) -> String {
        match self {
            Need::Permissions(_) => String::new(),
            Need::Device(id) => format!("devices/{id}"),
            Need::Scoped { resource, .. } => (*resource).to_owned(),
            Need::Module(d, m) => format!("devices/{d}/modules/{m}"),
        }
    }
}

/// Proof that a token was checked, and by what it was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Signed with a policy key.
    Policy {
        /// The policy's name.
        name: String,
        /// Its permissions.
        permissions: Permissions,
    },
    /// Signed with a device's own key.
    Device {
        /// The device.
        device_id: String,
    },
    /// Signed with a module's own key.
    Module {
        /// The device.
        device_id: String,
        /// The module.
        module_id: String,
    },
}

impl Grant {
    /// How a device that presented this grant authenticated, as the hub stamps it on its
    /// telemetry (`iothub-connection-auth-method`).
    pub fn auth_method(&self) -> AuthMethod {
        match self {
            Grant::Policy { .. } => AuthMethod::HUB_SAS,
            Grant::Device { .. } => AuthMethod::DEVICE_SAS,
            Grant::Module { .. } => AuthMethod::MODULE_SAS,
        }
    }
}

/// Checks tokens against the hub's policies and the registry's device keys.
#[derive(Debug, Clone)]
pub struct Authenticator {
    policies: Vec<Policy>,
    /// The hub name: a token host whose first label is this names the hub.
    hub_name: String,
    /// Other host names the hub answers to (its host name and certificate names), lower-case.
    hosts: Vec<String>,
}

fn sas_error(e: SasError) -> HubError {
    HubError::unauthorized(e.to_string())
}

impl Authenticator {
    /// An authenticator for these policies, for the hub `localhost`.
    pub fn new(policies: Vec<Policy>) -> Self {
        Authenticator {
            policies,
            hub_name: "localhost".to_owned(),
            hosts: vec!["localhost".to_owned()],
        }
    }

    /// The same authenticator for the hub `hub_name`, also answering to `hosts` (its host name
    /// and the names in its certificate).
    #[must_use]
    pub fn for_hub<I, H>(mut self, hub_name: &str, hosts: I) -> Self
    where
        I: IntoIterator<Item = H>,
        H: AsRef<str>,
    {
        self.hub_name = hub_name.to_owned();
        self.hosts = hosts
            .into_iter()
            .map(|h| h.as_ref().to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether a host (from a token's `sr` or a CBS audience) names this hub.
    pub fn is_our_host(&self, host: &str) -> bool {
        let first_label = host.split('.').next().unwrap_or_default();
        first_label.eq_ignore_ascii_case(&self.hub_name)
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Checks that `token` is for this hub and covers `need`'s resource.
    fn check_scope(&self, token: &SasToken, need: &Need<'_>) -> Result<(), HubError> {
        let host = token.host();
        if !self.is_our_host(host) {
            return Err(HubError::unauthorized(format!(
                "the token is for '{host}', not this hub ('{}'); sign it for this hub's host name",
                self.hub_name
            )));
        }
        let resource = need.resource();
        if !token.covers(&format!("{host}/{resource}")) {
            return Err(HubError::unauthorized(format!(
                "the token's scope '{}' does not cover '{host}/{resource}'",
                token.resource()
            )));
        }
        Ok(())
    }

    /// The policies it knows.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy with this name (names compare case-insensitively, as the portal does).
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Checks `token` (the whole `SharedAccessSignature ...` string) for `need` at `now_unix`.
    pub fn authorize(
        &self,
        hub: &Hub,
        token: &str,
        need: Need<'_>,
        now_unix: u64,
    ) -> Result<Grant, HubError> {
        let token = SasToken::parse(token).map_err(sas_error)?;
        token.check_expiry(now_unix).map_err(sas_error)?;
        match token.key_name() {
            Some(name) => self.authorize_policy(hub, &token, name, need),
            None => self.authorize_device(hub, &token, need),
        }
    }

    fn authorize_policy(
        &self,
        hub: &Hub,
        token: &SasToken,
        name: &str,
        need: Need<'_>,
    ) -> Result<Grant, HubError> {
        let policy = self.policy(name).ok_or_else(|| {
            HubError::unauthorized(format!("no shared access policy named '{name}'"))
        })?;
        verify_either(token, &policy.primary_key, &policy.secondary_key)?;
        self.check_scope(token, &need)?;
        match need {
            Need::Permissions(p) | Need::Scoped { permissions: p, .. } => {
                if !policy.permissions.contains(p) {
                    return Err(HubError::unauthorized(format!(
                        "policy '{}' lacks the permission this operation needs ({})",
                        policy.name,
                        p.names().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            Need::Device(device_id) => {
                if !policy.permissions.contains(Permissions::DEVICE_CONNECT) {
                    return Err(HubError::unauthorized(format!(
                        "policy '{}' has no DeviceConnect permission",
                        policy.name
                    )));
                }
                // The scope (hub-wide, `/devices`, or the device) was checked before.
                check_device_enabled(hub, device_id)?;
            }
            Need::Module(device_id, module_id) => {
                if !policy.permissions.contains(Permissions::DEVICE_CONNECT) {
                    return Err(HubError::unauthorized(format!(
                        "policy '{}' has no DeviceConnect permission",
                        policy.name
                    )));
                }
                check_device_enabled(hub, device_id)?;
                hub.get_module(device_id, module_id).map_err(|_| {
                    HubError::unauthorized(format!(
                        "module '{device_id}/{module_id}' is not registered"
                    ))
                })?;
            }
        }
        Ok(Grant::Policy {
            name: policy.name.clone(),
            permissions: policy.permissions,
        })
    }

    fn authorize_device(
        &self,
        hub: &Hub,
        token: &SasToken,
        need: Need<'_>,
    ) -> Result<Grant, HubError> {
        let segs = token.path_segments();
        if let Need::Module(device_id, module_id) = need {
            self.check_scope(token, &need)?;
            return authorize_module(hub, token, &segs, device_id, module_id);
        }
        let token_device = match segs.as_slice() {
            ["devices", id, ..] => *id,
            _ => {
                return Err(HubError::unauthorized(
                    "a token without skn must be scoped to {host}/devices/{deviceId}",
                ));
            }
        };
        let device_id = match need {
            Need::Device(id) => id,
            Need::Module(..) | Need::Permissions(_) | Need::Scoped { .. } => {
                return Err(HubError::unauthorized(
                    "a device token cannot be used for registry or service operations; use a shared access policy",
                ));
            }
        };
        if token_device != device_id {
            return Err(HubError::unauthorized(format!(
                "the token is for device '{token_device}', not '{device_id}'"
            )));
        }
        self.check_scope(token, &need)?;
        let device = hub.get_device(device_id).map_err(|_| {
            HubError::unauthorized(format!("device '{device_id}' is not registered"))
        })?;
        verify_either(
            token,
            device.primary_key().unwrap_or_default(),
            device.secondary_key().unwrap_or_default(),
        )?;
        if device.status == DeviceStatus::Disabled {
            return Err(HubError::DeviceDisabled {
                device_id: device_id.to_owned(),
            });
        }
        Ok(Grant::Device {
            device_id: device_id.to_owned(),
        })
    }
}

/// A token without `skn` for a module: scoped to exactly this module, signed with its key.
fn authorize_module(
    hub: &Hub,
    token: &SasToken,
    segs: &[&str],
    device_id: &str,
    module_id: &str,
) -> Result<Grant, HubError> {
    match segs {
        ["devices", d, "modules", m, ..] if *d == device_id && *m == module_id => {}
        ["devices", d, "modules", m, ..] => {
            return Err(HubError::unauthorized(format!(
                "the token is for module '{d}/{m}', not '{device_id}/{module_id}'"
            )));
        }
        _ => {
            return Err(HubError::unauthorized(format!(
                "a module connects with a token for {{host}}/devices/{device_id}/modules/{module_id}, signed with the module's key; a device token does not grant its modules"
            )));
        }
    }
    let module = hub.get_module(device_id, module_id).map_err(|_| {
        HubError::unauthorized(format!(
            "module '{device_id}/{module_id}' is not registered"
        ))
    })?;
    verify_either(
        token,
        module.primary_key().unwrap_or_default(),
        module.secondary_key().unwrap_or_default(),
    )?;
    check_device_enabled(hub, device_id)?;
    Ok(Grant::Module {
        device_id: device_id.to_owned(),
        module_id: module_id.to_owned(),
    })
}

fn verify_either(token: &SasToken, primary: &str, secondary: &str) -> Result<(), HubError> {
    // The Event Hubs clients sign `sb://` audiences with the key text itself as the HMAC key.
    let sb = token.is_service_bus_audience();
    for key in [primary, secondary] {
        if !key.is_empty()
            && (token.verify_signature(key).is_ok()
                || (sb && token.verify_signature_with_key_text(key).is_ok()))
        {
            return Ok(());
        }
    }
    Err(HubError::unauthorized(
        "the token's signature does not match any key for it; check the key in your connection string",
    ))
}

fn check_device_enabled(hub: &Hub, device_id: &str) -> Result<(), HubError> {
    let device = hub
        .get_device(device_id)
        .map_err(|_| HubError::unauthorized(format!("device '{device_id}' is not registered")))?;
    if device.status == DeviceStatus::Disabled {
        return Err(HubError::DeviceDisabled {
            device_id: device_id.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{IOTHUBOWNER, REGISTRY_READ, well_known_policies};
    use crate::hub::HubSettings;
    use iothub_protocol::registry::Device;
    use iothub_protocol::sas::build_token;
    use time::macros::datetime;

    const NOW: u64 = 1_800_000_000;
    const HUB: &str = "myhub.azure-devices.net";

    fn setup() -> (Authenticator, Hub, String) {
        let auth = Authenticator::new(well_known_policies()).for_hub("myhub", [HUB, "localhost"]);
        let mut hub = Hub::new(HubSettings::default(), 9);
        let d = hub
            .create_device(Device::new("dev1"), datetime!(2026-01-01 0:00 UTC))
            .unwrap();
        hub.create_device(Device::new("dev2"), datetime!(2026-01-01 0:00 UTC))
            .unwrap();
        let key = d.primary_key().unwrap().to_owned();
        (auth, hub, key)
    }

    fn policy_token(auth: &Authenticator, name: &str, sr: &str, exp: u64) -> String {
        let p = auth.policy(name).unwrap();
        build_token(sr, &p.primary_key, Some(&p.name), exp).unwrap()
    }

    #[test]
    fn policies_grant_by_permission() {
        let (auth, hub, _) = setup();
        let owner = policy_token(&auth, IOTHUBOWNER, HUB, NOW + 60);
        for p in [Permissions::REGISTRY_WRITE, Permissions::SERVICE_CONNECT] {
            assert!(
                auth.authorize(&hub, &owner, Need::Permissions(p), NOW)
                    .is_ok()
            );
        }
        let read = policy_token(&auth, REGISTRY_READ, HUB, NOW + 60);
        let need = |p| Need::Permissions(p);
        assert!(
            auth.authorize(&hub, &read, need(Permissions::REGISTRY_READ), NOW)
                .is_ok()
        );
        assert!(matches!(
            auth.authorize(&hub, &read, need(Permissions::REGISTRY_WRITE), NOW),
            Err(HubError::Unauthorized { .. })
        ));
        assert!(matches!(
            auth.authorize(&hub, &read, Need::Device("dev1"), NOW),
            Err(HubError::Unauthorized { .. })
        ));
        assert!(
            auth.authorize(&hub, &owner, Need::Device("dev1"), NOW)
                .is_ok()
        );
    }

    #[test]
    fn grants_say_how_a_device_authenticated() {
        let (auth, hub, key) = setup();
        let own = build_token(&format!("{HUB}/devices/dev1"), &key, None, NOW + 60).unwrap();
        let owner = policy_token(&auth, IOTHUBOWNER, HUB, NOW + 60);
        let grant = |t: &str| auth.authorize(&hub, t, Need::Device("dev1"), NOW).unwrap();
        assert_eq!(grant(&own).auth_method(), AuthMethod::DEVICE_SAS);
        assert_eq!(grant(&owner).auth_method(), AuthMethod::HUB_SAS);
    }

    #[test]
    fn device_tokens_only_for_their_device() {
        let (auth, mut hub, key) = setup();
        let t = build_token(&format!("{HUB}/devices/dev1"), &key, None, NOW + 60).unwrap();
        assert_eq!(
            auth.authorize(&hub, &t, Need::Device("dev1"), NOW),
            Ok(Grant::Device {
                device_id: "dev1".into()
            })
        );
        assert!(auth.authorize(&hub, &t, Need::Device("dev2"), NOW).is_err());
        assert!(
            auth.authorize(
                &hub,
                &t,
                Need::Permissions(Permissions::SERVICE_CONNECT),
                NOW
            )
            .is_err()
        );
        let mut d = hub.get_device("dev1").unwrap();
        d.status = DeviceStatus::Disabled;
        hub.put_device(d, Some("*"), datetime!(2026-01-01 0:00 UTC))
            .unwrap();
        assert!(matches!(
            auth.authorize(&hub, &t, Need::Device("dev1"), NOW),
            Err(HubError::DeviceDisabled { .. })
        ));
    }

    #[test]
    fn module_tokens_grant_only_their_module_and_device_tokens_no_module() {
        let (auth, mut hub, device_key) = setup();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let m1 = hub
            .create_module(iothub_protocol::module::Module::new("dev1", "m1"), t0)
            .unwrap();
        hub.create_module(iothub_protocol::module::Module::new("dev1", "m2"), t0)
            .unwrap();
        let mkey = m1.primary_key().unwrap().to_owned();
        let own = build_token(
            "myhub.azure-devices.net/devices/dev1/modules/m1",
            &mkey,
            None,
            NOW + 60,
        )
        .unwrap();
        let grant = auth.authorize(&hub, &own, Need::Module("dev1", "m1"), NOW);
        assert_eq!(
            grant,
            Ok(Grant::Module {
                device_id: "dev1".into(),
                module_id: "m1".into()
            })
        );
        assert_eq!(grant.unwrap().auth_method(), AuthMethod::MODULE_SAS);
        let refused = |t: &str, need: Need<'_>| {
            matches!(
                auth.authorize(&hub, t, need, NOW),
                Err(HubError::Unauthorized { .. })
            )
        };
        // A module token never grants the device or another module.
        assert!(refused(&own, Need::Device("dev1")));
        assert!(refused(&own, Need::Module("dev1", "m2")));
        // A module-scoped token signed with the device key is not the module's.
        let wrong_key = build_token(
            "myhub.azure-devices.net/devices/dev1/modules/m1",
            &device_key,
            None,
            NOW + 60,
        )
        .unwrap();
        assert!(refused(&wrong_key, Need::Module("dev1", "m1")));
        // A device token never grants its modules.
        let device = build_token(
            "myhub.azure-devices.net/devices/dev1",
            &device_key,
            None,
            NOW + 60,
        )
        .unwrap();
        assert!(refused(&device, Need::Module("dev1", "m1")));
        assert!(
            auth.authorize(&hub, &device, Need::Device("dev1"), NOW)
                .is_ok()
        );
        // Policy tokens: hub-wide or scoped to the module grant it; scoped to another doesn't.
        let hubwide = policy_token(&auth, "device", "myhub.azure-devices.net", NOW + 60);
        assert!(
            auth.authorize(&hub, &hubwide, Need::Module("dev1", "m1"), NOW)
                .is_ok()
        );
        let other = policy_token(
            &auth,
            "device",
            "myhub.azure-devices.net/devices/dev1/modules/m2",
            NOW + 60,
        );
        assert!(refused(&other, Need::Module("dev1", "m1")));
        assert!(refused(&other, Need::Device("dev1")));
        // An unregistered module is refused like an unregistered device.
        assert!(refused(&hubwide, Need::Module("dev1", "m9")));
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let (auth, hub, key) = setup();
        let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let sr = format!("{HUB}/devices/dev1");
        let wrong_key = build_token(&sr, other, None, NOW + 60).unwrap();
        let expired = build_token(&sr, &key, None, NOW).unwrap();
        let unknown_device =
            build_token(&format!("{HUB}/devices/ghost"), &key, None, NOW + 60).unwrap();
        let unknown_policy = build_token(HUB, other, Some("nobody"), NOW + 60).unwrap();
        for t in [
            wrong_key,
            expired,
            unknown_device,
            unknown_policy,
            "garbage".to_owned(),
        ] {
            let need = if t.contains("ghost") {
                Need::Device("ghost")
            } else {
                Need::Device("dev1")
            };
            assert!(
                matches!(
                    auth.authorize(&hub, &t, need, NOW),
                    Err(HubError::Unauthorized { .. })
                ),
                "{t} should be refused"
            );
        }
    }

    /// Every token kind x scope x operation: a token grants only under its `sr`, on this hub.
    #[test]
    fn tokens_grant_only_under_their_scope() {
        let (auth, hub, key) = setup();
        let owner = |sr: &str| policy_token(&auth, IOTHUBOWNER, sr, NOW + 60);
        let device = |sr: &str| build_token(sr, &key, None, NOW + 60).unwrap();
        let list = Need::Scoped {
            permissions: Permissions::REGISTRY_READ,
            resource: "devices",
        };
        let read_dev1 = Need::Scoped {
            permissions: Permissions::REGISTRY_READ,
            resource: "devices/dev1",
        };
        let send = Need::Permissions(Permissions::SERVICE_CONNECT);
        let (dev1, dev2) = (Need::Device("dev1"), Need::Device("dev2"));
        // (token, what it is, [send, list, read dev1, device dev1, device dev2])
        let table: Vec<(String, &str, [bool; 5])> = vec![
            (owner(HUB), "policy, hub", [true; 5]),
            (
                owner("MyHub.Azure-Devices.NET"),
                "policy, host in capitals",
                [true; 5],
            ),
            (owner("localhost"), "policy, a certificate name", [true; 5]),
            (owner("myhub"), "policy, the hub name alone", [true; 5]),
            (
                owner("otherhub.azure-devices.net"),
                "policy, other hub",
                [false; 5],
            ),
            (
                owner("otherhub.azure-devices.net/devices/dev1"),
                "policy, other hub's device",
                [false; 5],
            ),
            (
                owner(&format!("{HUB}/devices")),
                "policy, /devices",
                [false, true, true, true, true],
            ),
            (
                owner(&format!("{HUB}/devices/dev1")),
                "policy, narrower",
                [false, false, true, true, false],
            ),
            (
                owner(&format!("{HUB}/devices/dev")),
                "policy, not a segment",
                [false; 5],
            ),
            (
                owner(&format!("{HUB}/devices/dev1/messages")),
                "policy, below the device",
                [false; 5],
            ),
            (
                owner(&format!("{HUB}/messages")),
                "policy, elsewhere",
                [false; 5],
            ),
            (
                device(&format!("{HUB}/devices/dev1")),
                "device, correct",
                [false, false, false, true, false],
            ),
            (
                device("MYHUB.azure-devices.net/devices/dev1"),
                "device, host in capitals",
                [false, false, false, true, false],
            ),
            (
                device("localhost/devices/dev1"),
                "device, a certificate name",
                [false, false, false, true, false],
            ),
            (
                device("otherhub.azure-devices.net/devices/dev1"),
                "device, other hub",
                [false; 5],
            ),
            (
                device(&format!("{HUB}/devices/DEV1")),
                "device, id in capitals",
                [false; 5],
            ),
            (
                device(&format!("{HUB}/devices/dev1/messages/events")),
                "device, narrower",
                [false; 5],
            ),
            (
                device(&format!("{HUB}/devices")),
                "device, wider",
                [false; 5],
            ),
            (device(HUB), "device, hub-wide", [false; 5]),
        ];
        for (token, what, expect) in &table {
            for (need, expected) in [send, list, read_dev1, dev1, dev2].iter().zip(expect) {
                let got = auth.authorize(&hub, token, *need, NOW);
                assert_eq!(got.is_ok(), *expected, "{what}, {need:?}: {got:?}");
                if let Err(e) = got {
                    assert!(matches!(e, HubError::Unauthorized { .. }), "{what}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn hub_names_and_hosts_compare_without_case() {
        let auth = Authenticator::new(Vec::new()).for_hub("MyHub", ["Gateway.Local"]);
        assert!(auth.is_our_host("myhub.azure-devices.net"));
        assert!(auth.is_our_host("MYHUB"));
        assert!(auth.is_our_host("gateway.local"));
        assert!(!auth.is_our_host("myhub2.azure-devices.net"));
        assert!(!auth.is_our_host("local"));
        assert!(!auth.is_our_host(""));
    }
}
