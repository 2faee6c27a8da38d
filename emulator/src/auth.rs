//! Who may do what: SAS tokens checked against policies and device keys.
//!
//! Reference: iothub-protocol.md 7.1–7.3. This is the only place that turns a token into a
//! [`Grant`]; adapters ask for one before any hub operation and map [`HubError`] to their
//! wire form. The host part of the token's scope is not checked: the emulator answers to any
//! host name (gateways, `localhost`, container aliases), as a device behind a gateway needs.

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
    /// Module access for `(device, module)`: the module's own key (a token for
    /// `{host}/devices/{id}/modules/{mid}`), or a policy with DeviceConnect whose scope covers
    /// it. The device's key never grants its modules, and a module's key never grants the
    /// device or another module.
    Module(&'a str, &'a str),
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
}

fn sas_error(e: SasError) -> HubError {
    HubError::unauthorized(e.to_string())
}

impl Authenticator {
    /// An authenticator for these policies.
    pub fn new(policies: Vec<Policy>) -> Self {
        Authenticator { policies }
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
        match need {
            Need::Permissions(p) => {
                if !policy.permissions.contains(p) {
                    return Err(HubError::unauthorized(format!(
                        "policy '{}' lacks the permission this operation needs ({})",
                        policy.name,
                        p.names().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            Need::Module(device_id, module_id) => {
                if !policy.permissions.contains(Permissions::DEVICE_CONNECT) {
                    return Err(HubError::unauthorized(format!(
                        "policy '{}' has no DeviceConnect permission",
                        policy.name
                    )));
                }
                let segs = token.path_segments();
                let fits = match segs.as_slice() {
                    [] | ["devices"] => true,
                    ["devices", d] => *d == device_id,
                    ["devices", d, "modules", m, ..] => *d == device_id && *m == module_id,
                    _ => false,
                };
                if !fits {
                    return Err(HubError::unauthorized(format!(
                        "the token's scope does not cover module '{device_id}/{module_id}'"
                    )));
                }
                check_device_enabled(hub, device_id)?;
                hub.get_module(device_id, module_id).map_err(|_| {
                    HubError::unauthorized(format!(
                        "module '{device_id}/{module_id}' is not registered"
                    ))
                })?;
            }
            Need::Device(device_id) => {
                if !policy.permissions.contains(Permissions::DEVICE_CONNECT) {
                    return Err(HubError::unauthorized(format!(
                        "policy '{}' has no DeviceConnect permission",
                        policy.name
                    )));
                }
                // A policy token may be hub-wide, cover `/devices`, or name the device (but
                // not one of its modules).
                let segs = token.path_segments();
                let fits = match segs.as_slice() {
                    [] | ["devices"] => true,
                    ["devices", _, "modules", ..] => false,
                    ["devices", id, ..] => *id == device_id,
                    _ => false,
                };
                if !fits {
                    return Err(HubError::unauthorized(format!(
                        "the token's scope does not cover device '{device_id}'"
                    )));
                }
                check_device_enabled(hub, device_id)?;
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
            return authorize_module(hub, token, &segs, device_id, module_id);
        }
        let token_device = match segs.as_slice() {
            ["devices", _, "modules", ..] => {
                return Err(HubError::unauthorized(
                    "a module's token does not grant its device; use the device's own key",
                ));
            }
            ["devices", id, ..] => *id,
            _ => {
                return Err(HubError::unauthorized(
                    "a token without skn must be scoped to {host}/devices/{deviceId}",
                ));
            }
        };
        let device_id = match need {
            Need::Device(id) => id,
            Need::Module(..) | Need::Permissions(_) => {
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
    for key in [primary, secondary] {
        if !key.is_empty() && token.verify_signature(key).is_ok() {
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

    fn setup() -> (Authenticator, Hub, String) {
        let auth = Authenticator::new(well_known_policies());
        let mut hub = Hub::new(HubSettings::default(), 9);
        let d = hub
            .create_device(Device::new("dev1"), datetime!(2026-01-01 0:00 UTC))
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
        let owner = policy_token(&auth, IOTHUBOWNER, "localhost", NOW + 60);
        for p in [Permissions::REGISTRY_WRITE, Permissions::SERVICE_CONNECT] {
            assert!(
                auth.authorize(&hub, &owner, Need::Permissions(p), NOW)
                    .is_ok()
            );
        }
        let read = policy_token(&auth, REGISTRY_READ, "localhost", NOW + 60);
        assert!(
            auth.authorize(
                &hub,
                &read,
                Need::Permissions(Permissions::REGISTRY_READ),
                NOW
            )
            .is_ok()
        );
        assert!(matches!(
            auth.authorize(
                &hub,
                &read,
                Need::Permissions(Permissions::REGISTRY_WRITE),
                NOW
            ),
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
        let own = build_token("h/devices/dev1", &key, None, NOW + 60).unwrap();
        let owner = policy_token(&auth, IOTHUBOWNER, "h", NOW + 60);
        let grant = |t: &str| auth.authorize(&hub, t, Need::Device("dev1"), NOW).unwrap();
        assert_eq!(grant(&own).auth_method(), AuthMethod::DEVICE_SAS);
        assert_eq!(grant(&owner).auth_method(), AuthMethod::HUB_SAS);
    }

    #[test]
    fn device_tokens_only_for_their_device() {
        let (auth, mut hub, key) = setup();
        let t = build_token("myhub.azure-devices.net/devices/dev1", &key, None, NOW + 60).unwrap();
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
        let own = build_token("h/devices/dev1/modules/m1", &mkey, None, NOW + 60).unwrap();
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
        let wrong_key =
            build_token("h/devices/dev1/modules/m1", &device_key, None, NOW + 60).unwrap();
        assert!(refused(&wrong_key, Need::Module("dev1", "m1")));
        // A device token never grants its modules.
        let device = build_token("h/devices/dev1", &device_key, None, NOW + 60).unwrap();
        assert!(refused(&device, Need::Module("dev1", "m1")));
        assert!(
            auth.authorize(&hub, &device, Need::Device("dev1"), NOW)
                .is_ok()
        );
        // Policy tokens: hub-wide or scoped to the module grant it; scoped to another doesn't.
        let hubwide = policy_token(&auth, "device", "h", NOW + 60);
        assert!(
            auth.authorize(&hub, &hubwide, Need::Module("dev1", "m1"), NOW)
                .is_ok()
        );
        let other = policy_token(&auth, "device", "h/devices/dev1/modules/m2", NOW + 60);
        assert!(refused(&other, Need::Module("dev1", "m1")));
        assert!(refused(&other, Need::Device("dev1")));
        // An unregistered module is refused like an unregistered device.
        assert!(refused(&hubwide, Need::Module("dev1", "m9")));
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let (auth, hub, key) = setup();
        let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let wrong_key = build_token("h/devices/dev1", other, None, NOW + 60).unwrap();
        let expired = build_token("h/devices/dev1", &key, None, NOW).unwrap();
        let unknown_device = build_token("h/devices/ghost", &key, None, NOW + 60).unwrap();
        let unknown_policy = build_token("h", other, Some("nobody"), NOW + 60).unwrap();
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
        let scoped = policy_token(&auth, "device", "h/devices/other", NOW + 60);
        assert!(
            auth.authorize(&hub, &scoped, Need::Device("dev1"), NOW)
                .is_err()
        );
        let scoped = policy_token(&auth, "device", "h/devices", NOW + 60);
        assert!(
            auth.authorize(&hub, &scoped, Need::Device("dev1"), NOW)
                .is_ok()
        );
    }
}
