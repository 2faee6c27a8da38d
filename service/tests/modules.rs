//! Module identities from the service client: registry CRUD with generated and given keys and
//! etag conflicts, module twins (get, patch, replace), and module direct methods.

mod common;

use common::*;
use iothub_emulator::hub::Identity;
use iothub_service::{Device, Error, ErrorCode, IfMatch, MethodRequest, Module};
use serde_json::json;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

#[tokio::test]
async fn module_create_get_list_update_delete() {
    let emulator = emulator().await;
    let client = client(&emulator);

    // A module needs its device.
    let e = client
        .create_module(&Module::new("d1", "m1"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    client.create_device(&Device::new("d1")).await.unwrap();

    // Generated keys.
    let m1 = client
        .create_module(&Module::new("d1", "m1"))
        .await
        .unwrap();
    assert_eq!((m1.device_id.as_str(), m1.module_id.as_str()), ("d1", "m1"));
    assert!(m1.primary_key().is_some() && m1.secondary_key().is_some());
    assert!(m1.etag.is_some() && m1.generation_id.is_some());

    // Given keys are kept; managedBy travels.
    let mut m = Module::new("d1", "m2");
    m.authentication.symmetric_key.primary_key = Some(KEY_A.into());
    m.authentication.symmetric_key.secondary_key = Some(KEY_B.into());
    m.managed_by = Some("ops".into());
    let m2 = client.create_module(&m).await.unwrap();
    assert_eq!(
        (m2.primary_key(), m2.secondary_key()),
        (Some(KEY_A), Some(KEY_B))
    );
    assert_eq!(m2.managed_by.as_deref(), Some("ops"));

    // Creating again is a conflict, with its own variant and code.
    let e = client
        .create_module(&Module::new("d1", "m1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::ModuleAlreadyExistsOnDevice { .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), Some(ErrorCode::ModuleAlreadyExistsOnDevice));

    // Get and list.
    let got = client.get_module("d1", "m1").await.unwrap();
    assert_eq!((got.primary_key(), &got.etag), (m1.primary_key(), &m1.etag));
    let e = client.get_module("d1", "nope").await.unwrap_err();
    assert!(matches!(e, Error::ModuleNotFound { .. }), "{e:?}");
    assert_eq!(e.code().map(|c| c.code()), Some(404010));
    let e = client.get_module("ghost", "m1").await.unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    let ids: Vec<_> = client
        .list_modules("d1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.module_id)
        .collect();
    assert_eq!(ids, ["m1", "m2"]);

    // Update with the current etag, then with the stale one; then forced.
    let mut change = got.clone();
    change.managed_by = Some("me".into());
    let updated = client
        .update_module(&change, IfMatch::from_module(&got))
        .await
        .unwrap();
    assert_eq!(updated.managed_by.as_deref(), Some("me"));
    assert_ne!(updated.etag, got.etag);
    assert_eq!(updated.primary_key(), got.primary_key(), "keys kept");
    let e = client
        .update_module(&change, IfMatch::from_module(&got))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { .. }), "{e:?}");
    change.managed_by = None;
    change.authentication.symmetric_key.primary_key = Some(KEY_B.into());
    change.authentication.symmetric_key.secondary_key = Some(KEY_A.into());
    let forced = client.update_module(&change, IfMatch::Any).await.unwrap();
    assert_eq!(forced.primary_key(), Some(KEY_B));

    // Delete: a stale etag fails, then it is gone.
    let e = client
        .delete_module("d1", "m1", IfMatch::from_module(&got))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { .. }), "{e:?}");
    client
        .delete_module("d1", "m1", IfMatch::from_module(&forced))
        .await
        .unwrap();
    let e = client.get_module("d1", "m1").await.unwrap_err();
    assert!(matches!(e, Error::ModuleNotFound { .. }), "{e:?}");
    let e = client
        .delete_module("d1", "m1", IfMatch::Any)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ModuleNotFound { .. }), "{e:?}");

    // Deleting the device takes its modules along.
    client.delete_device("d1", IfMatch::Any).await.unwrap();
    client.create_device(&Device::new("d1")).await.unwrap();
    assert!(client.list_modules("d1").await.unwrap().is_empty());

    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn module_twins_are_read_patched_and_replaced() {
    let emulator = emulator().await;
    let client = client(&emulator);
    client.create_device(&Device::new("d1")).await.unwrap();
    client
        .create_module(&Module::new("d1", "m1"))
        .await
        .unwrap();

    let twin = client.get_module_twin("d1", "m1").await.unwrap();
    assert_eq!(twin.module_id.as_deref(), Some("m1"));
    assert_eq!(twin.device_id, "d1");

    let patch = json!({"tags": {"site": "a"}, "properties": {"desired": {"rate": 5}}});
    let patched = client
        .update_module_twin("d1", "m1", &patch, IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(patched.properties.desired["rate"], 5);
    assert_eq!(patched.properties.desired_version(), Some(2));
    // The hub holds it on the module's twin, not the device's.
    let module = Identity::module("d1", "m1");
    let stored = emulator.hub().read(|h| h.get_twin(&module)).unwrap();
    assert_eq!(stored.properties.desired["rate"], 5);
    let device_twin = client.get_twin("d1").await.unwrap();
    assert!(device_twin.properties.desired.get("rate").is_none());

    // A stale twin etag fails.
    let e = client
        .update_module_twin(
            "d1",
            "m1",
            &json!({"tags": {"site": "b"}}),
            IfMatch::Etag(twin.etag.clone().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { .. }), "{e:?}");

    // Replace: what the body leaves out is emptied.
    let replaced = client
        .replace_module_twin(
            "d1",
            "m1",
            &json!({"properties": {"desired": {"mode": "eco"}}}),
            IfMatch::Etag(patched.etag.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(replaced.properties.desired["mode"], "eco");
    assert!(replaced.properties.desired.get("rate").is_none());
    assert!(replaced.tags.is_empty(), "{replaced:?}");

    let e = client.get_module_twin("d1", "nope").await.unwrap_err();
    assert!(matches!(e, Error::ModuleNotFound { .. }), "{e:?}");
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn module_methods_reach_the_module_only() {
    let emulator = emulator().await;
    let client = client(&emulator);
    client.create_device(&Device::new("d1")).await.unwrap();
    client
        .create_module(&Module::new("d1", "m1"))
        .await
        .unwrap();

    let request = MethodRequest::new("reset")
        .with_json(r#"{"hard":false}"#)
        .unwrap()
        .response_timeout(5);
    // Nobody listens yet.
    let e = client
        .invoke_module_method("d1", "m1", &request)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotOnline { .. }), "{e:?}");

    // The device listening does not make the module reachable.
    let _device = emulator
        .hub()
        .listen_methods(&Identity::device("d1"))
        .unwrap();
    let e = client
        .invoke_module_method("d1", "m1", &request)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotOnline { .. }), "{e:?}");

    let mut listener = emulator
        .hub()
        .listen_methods(&Identity::module("d1", "m1"))
        .unwrap();
    let module = async {
        let req = listener.recv().await.unwrap();
        assert_eq!(
            (req.name.as_str(), req.payload.as_str()),
            ("reset", r#"{"hard":false}"#)
        );
        listener.respond(&req.rid.to_string(), 200, br#"{"done":true}"#);
        listener
    };
    let (r, _listener) = tokio::join!(client.invoke_module_method("d1", "m1", &request), module);
    let r = r.unwrap();
    assert_eq!((r.status, r.payload.as_str()), (200, r#"{"done":true}"#));

    let e = client
        .invoke_module_method("d1", "ghost", &request)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ModuleNotFound { .. }), "{e:?}");
    client.close().await;
    emulator.shutdown().await;
}
