//! The registry over HTTPS: create (with and without keys), get, update, delete, list, etag
//! conflicts, and purging a device's C2D queue.

mod common;

use common::*;
use iothub_protocol::Message;
use iothub_service::{Device, DeviceStatus, Error, IfMatch};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

#[tokio::test]
async fn create_get_update_list_delete() {
    let emulator = emulator().await;
    let client = client(&emulator);

    // Without keys: the hub generates them.
    let created = client.create_device(&Device::new("reg-1")).await.unwrap();
    assert_eq!(created.device_id, "reg-1");
    assert!(created.primary_key().is_some(), "{created:?}");
    assert!(created.secondary_key().is_some(), "{created:?}");
    assert!(created.etag.is_some());
    assert!(created.generation_id.is_some());

    // With keys: kept.
    let mut d = Device::new("reg-2");
    d.authentication.symmetric_key.primary_key = Some(KEY_A.into());
    d.authentication.symmetric_key.secondary_key = Some(KEY_B.into());
    let created2 = client.create_device(&d).await.unwrap();
    assert_eq!(created2.primary_key(), Some(KEY_A));
    assert_eq!(created2.secondary_key(), Some(KEY_B));

    // Creating again is a conflict.
    let e = client
        .create_device(&Device::new("reg-1"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceAlreadyExists { .. }), "{e:?}");

    // Get.
    let got = client.get_device("reg-1").await.unwrap();
    assert_eq!(got.primary_key(), created.primary_key());
    assert_eq!(got.etag, created.etag);
    let e = client.get_device("nope").await.unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    assert_eq!(e.code().map(|c| c.code()), Some(404001));

    // Update with the current etag, then with the stale one.
    let mut change = got.clone();
    change.status = DeviceStatus::Disabled;
    change.status_reason = Some("maintenance".into());
    let updated = client
        .update_device(&change, IfMatch::from_device(&got))
        .await
        .unwrap();
    assert_eq!(updated.status, DeviceStatus::Disabled);
    assert_ne!(updated.etag, got.etag);
    let e = client
        .update_device(&change, IfMatch::from_device(&got))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { .. }), "{e:?}");
    // Forced.
    let mut enable = updated.clone();
    enable.status = DeviceStatus::Enabled;
    let forced = client.update_device(&enable, IfMatch::Any).await.unwrap();
    assert_eq!(forced.status, DeviceStatus::Enabled);
    // A quoted etag works as well as a bare one.
    let quoted = IfMatch::Etag(format!("\"{}\"", forced.etag.clone().unwrap()));
    client.update_device(&forced, quoted).await.unwrap();
    // Updating a device that does not exist.
    let e = client
        .update_device(&Device::new("ghost"), IfMatch::Any)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");

    // List.
    let all = client.list_devices(1000).await.unwrap();
    let mut ids: Vec<_> = all.iter().map(|d| d.device_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["reg-1", "reg-2"]);
    assert_eq!(client.list_devices(1).await.unwrap().len(), 1);

    // Delete with a stale etag, then with the current one, then forced.
    let e = client
        .delete_device("reg-1", IfMatch::from_device(&got))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { .. }), "{e:?}");
    let current = client.get_device("reg-1").await.unwrap();
    client
        .delete_device("reg-1", IfMatch::from_device(&current))
        .await
        .unwrap();
    client.delete_device("reg-2", IfMatch::Any).await.unwrap();
    let e = client
        .delete_device("reg-2", IfMatch::Any)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    assert!(client.list_devices(10).await.unwrap().is_empty());

    // An id that needs encoding in the path.
    let odd = client.create_device(&Device::new("a#b?c%d")).await.unwrap();
    assert_eq!(odd.device_id, "a#b?c%d");
    assert_eq!(
        client.get_device("a#b?c%d").await.unwrap().device_id,
        "a#b?c%d"
    );

    emulator.shutdown().await;
}

#[tokio::test]
async fn purge_empties_the_queue() {
    let emulator = emulator().await;
    let client = client(&emulator);
    client.create_device(&Device::new("purge-1")).await.unwrap();
    for i in 0..5 {
        client
            .send_c2d("purge-1", &Message::new(format!("m{i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        client
            .get_device("purge-1")
            .await
            .unwrap()
            .cloud_to_device_message_count,
        5
    );
    let purged = client.purge_c2d("purge-1").await.unwrap();
    assert_eq!(purged.device_id, "purge-1");
    assert_eq!(purged.total_messages_purged, 5);
    assert!(receive(&emulator, "purge-1").is_none());
    assert_eq!(
        client
            .purge_c2d("purge-1")
            .await
            .unwrap()
            .total_messages_purged,
        0
    );
    let e = client.purge_c2d("nope").await.unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    client.close().await;
    emulator.shutdown().await;
}
