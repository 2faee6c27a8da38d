//! The identity registry and queue purge over HTTPS (iothub-protocol.md 6, 1.7): the routes
//! under `/devices`, called through the shared HTTPS request helper (`https.rs`).
//!
//! Requests are what the Node and C# service SDKs send: no `If-Match` on create, `If-Match:
//! "*"` for a forced update or delete, a quoted etag for a conditional one.

use http::Method;
use iothub_protocol::device_id::encode_path_segment;
use iothub_protocol::registry::{Device, PurgeMessageQueueResult};

use crate::Error;
use crate::https::{Call, Https};

pub use crate::https::{API_VERSION, IfMatch};

/// Device fields only the hub writes; never sent.
const READ_ONLY_FIELDS: &[&str] = &[
    "connectionState",
    "connectionStateUpdatedTime",
    "statusUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
];

fn device_path(device_id: &str) -> String {
    format!("/devices/{}", encode_path_segment(device_id))
}

/// The JSON sent for a create or update: the device without the fields only the hub writes
/// (connection state, timestamps, queue length) and without nulls, close to what the Node SDK
/// sends (a real hub's JSON reader does not take `null` for its timestamps).
fn body(device: &Device) -> Result<Vec<u8>, Error> {
    identity_body(device, "device")
}

/// [`body`] for any registry identity (a device or a module, which share the field names):
/// serialized without the fields only the hub writes and without nulls.
pub(crate) fn identity_body(
    identity: &impl serde::Serialize,
    what: &str,
) -> Result<Vec<u8>, Error> {
    let mut value = serde_json::to_value(identity).map_err(|e| Error::ArgumentInvalid {
        message: format!("cannot serialize the {what}: {e}"),
    })?;
    if let Some(map) = value.as_object_mut() {
        for read_only in READ_ONLY_FIELDS {
            map.remove(*read_only);
        }
        map.retain(|_, v| !v.is_null());
        if let Some(auth) = map
            .get_mut("authentication")
            .and_then(|a| a.as_object_mut())
        {
            for part in ["symmetricKey", "x509Thumbprint"] {
                if let Some(obj) = auth.get_mut(part).and_then(|p| p.as_object_mut()) {
                    obj.retain(|_, v| !v.is_null());
                }
            }
            if auth
                .get("x509Thumbprint")
                .and_then(|t| t.as_object())
                .is_some_and(|t| t.is_empty())
            {
                auth.remove("x509Thumbprint");
            }
        }
    }
    serde_json::to_vec(&value).map_err(|e| Error::ArgumentInvalid {
        message: format!("cannot serialize the {what}: {e}"),
    })
}

pub(crate) async fn create_device(https: &Https, device: &Device) -> Result<Device, Error> {
    let path = device_path(&device.device_id);
    let call = Call {
        body: Some(body(device)?),
        ..Call::new(Method::PUT, &path)
    };
    https.call_json("create device", call).await
}

pub(crate) async fn get_device(https: &Https, device_id: &str) -> Result<Device, Error> {
    let path = device_path(device_id);
    https
        .call_json("get device", Call::new(Method::GET, &path))
        .await
}

pub(crate) async fn update_device(
    https: &Https,
    device: &Device,
    if_match: &IfMatch,
) -> Result<Device, Error> {
    let path = device_path(&device.device_id);
    let call = Call {
        if_match: Some(if_match),
        body: Some(body(device)?),
        ..Call::new(Method::PUT, &path)
    };
    https.call_json("update device", call).await
}

pub(crate) async fn delete_device(
    https: &Https,
    device_id: &str,
    if_match: &IfMatch,
) -> Result<(), Error> {
    let path = device_path(device_id);
    let call = Call {
        if_match: Some(if_match),
        ..Call::new(Method::DELETE, &path)
    };
    https.call(call).await?;
    Ok(())
}

pub(crate) async fn list_devices(https: &Https, top: usize) -> Result<Vec<Device>, Error> {
    let query = format!("top={top}");
    let call = Call {
        query: &query,
        ..Call::new(Method::GET, "/devices")
    };
    https.call_json("list devices", call).await
}

pub(crate) async fn purge_c2d(
    https: &Https,
    device_id: &str,
) -> Result<PurgeMessageQueueResult, Error> {
    let path = format!("{}/commands", device_path(device_id));
    https
        .call_json("purge", Call::new(Method::DELETE, &path))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_only_what_a_caller_sets() {
        let b = body(&Device::new("d1")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "deviceId": "d1",
                "status": "enabled",
                "authentication": {"symmetricKey": {}, "type": "sas"},
                "capabilities": {"iotEdge": false},
            })
        );
        let mut d = Device::new("d2");
        d.etag = Some("MQ==".into());
        d.generation_id = Some("g".into());
        d.status_reason = Some("why".into());
        d.cloud_to_device_message_count = 3;
        d.authentication.symmetric_key.primary_key = Some("a2V5".into());
        d.authentication.x509_thumbprint.primary_thumbprint = Some("AB".into());
        let v: serde_json::Value = serde_json::from_slice(&body(&d).unwrap()).unwrap();
        assert_eq!(v["etag"], "MQ==");
        assert_eq!(v["generationId"], "g");
        assert_eq!(v["statusReason"], "why");
        assert!(v.get("cloudToDeviceMessageCount").is_none());
        assert_eq!(
            v["authentication"]["symmetricKey"],
            serde_json::json!({"primaryKey": "a2V5"})
        );
        assert_eq!(
            v["authentication"]["x509Thumbprint"],
            serde_json::json!({"primaryThumbprint": "AB"})
        );
    }

    #[test]
    fn device_paths_are_encoded() {
        assert_eq!(device_path("a#b c"), "/devices/a%23b%20c");
    }
}
