//! Module connections (iothub-beyond-c2d.md 4): client id `{deviceId}/{moduleId}`, telemetry on
//! `devices/{deviceId}/modules/{moduleId}/messages/events/{properties}`.
//!
//! A module connection is its own identity: it publishes telemetry only on its own module
//! topic (never the device's), and the hub has no C2D for modules, so it never receives the
//! device's C2D messages. Twin and method topics are the device's `$iothub/...` ones, scoped by
//! the connection's identity.

use crate::hub::Identity;

/// The device id and module id of a module client id; `None` for a device client id.
/// `Err` for a client id with a `/` that is not `{deviceId}/{moduleId}`.
pub fn split_client_id(client_id: &str) -> Result<Option<(&str, &str)>, ()> {
    match client_id.split_once('/') {
        None => Ok(None),
        Some((d, m)) if !d.is_empty() && !m.is_empty() && !m.contains('/') => Ok(Some((d, m))),
        Some(_) => Err(()),
    }
}

/// What a module connection's PUBLISH topic means for the device-shaped routing: its own
/// events topic becomes the device form (`devices/{id}/messages/events/...`) so the property
/// bag is read the same way; any other `devices/...` topic is refused (`Err` with the reason),
/// and `$iothub/...` topics pass unchanged.
pub fn device_form(identity: &Identity, topic: &str) -> Result<String, String> {
    let Some(module_id) = &identity.module_id else {
        return Ok(topic.to_owned());
    };
    let own = format!(
        "devices/{}/modules/{module_id}/messages/events",
        identity.device_id
    );
    if let Some(rest) = topic.strip_prefix(&own)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return Ok(format!(
            "devices/{}/messages/events{rest}",
            identity.device_id
        ));
    }
    if topic.starts_with("devices/") {
        return Err(format!(
            "module '{identity}' may publish telemetry only on {own}/{{properties}}"
        ));
    }
    Ok(topic.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(split_client_id("d1"), Ok(None));
        assert_eq!(split_client_id("d1/m1"), Ok(Some(("d1", "m1"))));
        for bad in ["d1/", "/m1", "d1/m1/x"] {
            assert_eq!(split_client_id(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn a_module_publishes_only_on_its_own_events_topic() {
        let m = Identity::module("d1", "m1");
        assert_eq!(
            device_form(&m, "devices/d1/modules/m1/messages/events/a=1").unwrap(),
            "devices/d1/messages/events/a=1"
        );
        assert_eq!(
            device_form(&m, "devices/d1/modules/m1/messages/events").unwrap(),
            "devices/d1/messages/events"
        );
        for t in [
            "devices/d1/messages/events/",
            "devices/d1/modules/m2/messages/events/",
            "devices/d1/modules/m1/messages/eventsx",
            "devices/d2/modules/m1/messages/events/",
        ] {
            assert!(device_form(&m, t).is_err(), "{t}");
        }
        assert_eq!(
            device_form(&m, "$iothub/twin/GET/?$rid=1").unwrap(),
            "$iothub/twin/GET/?$rid=1"
        );
        let d = Identity::device("d1");
        assert_eq!(
            device_form(&d, "devices/d1/modules/m1/messages/events/").unwrap(),
            "devices/d1/modules/m1/messages/events/"
        );
    }
}
