//! Telemetry ingestion: stamps, errors, batches.

use super::*;

#[test]
fn telemetry_is_stamped_with_the_sender() {
    let mut h = hub(&["d1"]);
    let generation = h.get_device("d1").unwrap().generation_id;
    let mut m = msg("a");
    m.system.content_type = Some("application/json".into());
    m.system.sequence_number = Some(99);
    m.system.lock_token = Some("forged".into());
    m.properties.insert("k", "v");
    let policy = Origin {
        identity: Identity::device("d1"),
        auth: AuthMethod::HUB_SAS,
    };
    let placed = h.send_telemetry(&policy, m, T0).unwrap();
    let e = &all(&h, placed.partition)[0];
    assert_eq!(e.source, EventSource::Telemetry);
    assert_eq!(
        e.connection,
        Some(ConnectionStamp {
            auth: AuthMethod::HUB_SAS,
            generation_id: generation,
        })
    );
    assert_eq!(e.message.system.sequence_number, None, "hub fields cleared");
    assert_eq!(e.message.system.lock_token, None);
    assert_eq!(e.message.properties.get("k"), Some("v"));
    assert!(e.has_properties());
    assert_eq!(wakeups(&mut h), vec![placed.partition]);
    // The control API's view is still fed.
    let view = h.d2c_messages("d1").unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].message().system.message_id, Some("a".into()));
}

#[test]
fn telemetry_errors() {
    let mut h = hub(&["d1"]);
    assert!(matches!(
        h.send_telemetry(&Origin::device("nope"), msg("a"), T0),
        Err(HubError::DeviceNotFound { .. })
    ));
    let big = Message::new(vec![0u8; iothub_protocol::message::MAX_D2C_SIZE + 1]);
    assert!(matches!(
        h.send_telemetry(&Origin::device("d1"), big, T0),
        Err(HubError::MessageTooLarge { .. })
    ));
    let mut d = h.get_device("d1").unwrap();
    d.status = DeviceStatus::Disabled;
    h.put_device(d, Some("*"), T0).unwrap();
    assert!(matches!(
        h.send_telemetry(&Origin::device("d1"), msg("a"), T0),
        Err(HubError::DeviceDisabled { .. })
    ));
    for p in 0..4 {
        assert!(all(&h, p).is_empty());
    }
    assert!(h.d2c_messages("d1").unwrap().is_empty());
}

#[test]
fn a_batch_lands_consecutively_with_one_wakeup() {
    let mut h = hub(&["d1"]);
    send(&mut h, "d1", "first", T0);
    let _ = wakeups(&mut h);
    let placed = h
        .send_telemetry_batch(
            &Origin::device("d1"),
            vec![msg("a"), msg("b"), msg("c")],
            T0,
        )
        .unwrap();
    assert_eq!(
        placed.iter().map(|a| a.sequence_number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(wakeups(&mut h).len(), 1);
    assert!(
        h.send_telemetry_batch(&Origin::device("d1"), Vec::new(), T0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_batch_is_all_or_nothing() {
    let mut h = hub(&["d1"]);
    let p = partition_for_device("d1", 4);
    let mut bad = msg("b");
    bad.properties.insert("bad name", "v");
    let e = h
        .send_telemetry_batch(&Origin::device("d1"), vec![msg("a"), bad, msg("c")], T0)
        .unwrap_err();
    assert!(e.to_string().starts_with("batch item 1:"), "{e}");
    let half = Message::new(vec![0u8; iothub_protocol::message::MAX_D2C_SIZE / 2 + 1]);
    let e = h
        .send_telemetry_batch(&Origin::device("d1"), vec![half.clone(), half], T0)
        .unwrap_err();
    assert!(matches!(e, HubError::MessageTooLarge { .. }));
    assert!(all(&h, p).is_empty());
    assert!(h.d2c_messages("d1").unwrap().is_empty());
    assert!(wakeups(&mut h).is_empty());
    assert_eq!(
        h.partition_info(&p.to_string())
            .unwrap()
            .last_enqueued_sequence_number,
        -1
    );
}
