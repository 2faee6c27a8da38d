//! Twins, queries and bulk registry writes against the emulator.

mod common;

use common::*;
use futures_util::StreamExt;
use iothub_service::{Device, Error, ExportImportDevice, IfMatch, ImportMode, QueryItemType};
use serde_json::json;

#[tokio::test]
async fn twin_get_update_replace_with_etags() {
    let emulator = emulator().await;
    let client = client(&emulator);
    client.create_device(&Device::new("tw-1")).await.unwrap();

    let twin = client.get_twin("tw-1").await.unwrap();
    assert_eq!(twin.device_id, "tw-1");
    assert_eq!(twin.properties.desired_version(), Some(1));
    let etag = twin.etag.clone().unwrap();

    let patch = json!({"tags": {"floor": 3}, "properties": {"desired": {"fw": "1.0"}}});
    let updated = client
        .update_twin("tw-1", &patch, IfMatch::Etag(etag.clone()))
        .await
        .unwrap();
    assert_eq!(updated.tags["floor"], json!(3));
    assert_eq!(updated.properties.desired_version(), Some(2));

    let e = client
        .update_twin("tw-1", &json!({"tags": {"floor": 4}}), IfMatch::Etag(etag))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed { .. }), "{e:?}");

    let replaced = client
        .replace_twin("tw-1", &json!({"tags": {"new": true}}), IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(
        replaced.tags,
        json!({"new": true}).as_object().unwrap().clone()
    );
    assert!(replaced.properties.desired.get("fw").is_none());

    let e = client.get_twin("ghost").await.unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn query_pages_stream_and_bulk() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let ops: Vec<ExportImportDevice> = (0..12)
        .map(|i| {
            let mut d = ExportImportDevice::new(format!("q-{i:02}"), ImportMode::Create);
            d.tags = json!({"even": i % 2 == 0}).as_object().cloned();
            d
        })
        .collect();
    let result = client.bulk_registry(&ops).await.unwrap();
    assert!(result.is_successful, "{result:?}");

    let q = "SELECT * FROM devices WHERE tags.even = true";
    let first = client.query_page(q, 4, None).await.unwrap();
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.item_type, QueryItemType::Twin);
    assert!(first.continuation_token.is_some());

    let rows: Vec<_> = client.query(q, 4).collect().await;
    let ids: Vec<String> = rows
        .into_iter()
        .map(|r| r.unwrap()["deviceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["q-00", "q-02", "q-04", "q-06", "q-08", "q-10"]);

    let mut bad = std::pin::pin!(client.query("SELECT * FROM devices ORDER BY x", 10));
    let e = bad.next().await.unwrap().unwrap_err();
    assert!(matches!(e, Error::ArgumentInvalid { .. }), "{e:?}");
    assert!(bad.next().await.is_none());

    let mixed = vec![
        ExportImportDevice::new("q-00", ImportMode::Create),
        ExportImportDevice::new("q-01", ImportMode::Delete),
    ];
    let result = client.bulk_registry(&mixed).await.unwrap();
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].device_id, "q-00");
    let e = client.get_device("q-01").await.unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    emulator.shutdown().await;
}
