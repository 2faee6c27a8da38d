//! Direct methods from the service client: the device's answer comes back as it was sent, and
//! 404103 and 504101 come back as their own errors.

mod common;

use std::time::Duration;

use common::*;
use iothub_emulator::hub::Identity;
use iothub_service::{Error, ErrorCode, MethodRequest};

#[tokio::test]
async fn invoke_method_returns_the_answer_and_typed_errors() {
    let emulator = emulator().await;
    emulator.create_device("d1").unwrap();
    let client = client(&emulator);

    let e = client
        .invoke_method("d1", &MethodRequest::new("reboot"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotOnline { .. }), "{e:?}");
    assert_eq!(e.code(), Some(ErrorCode::DeviceNotOnline));

    let mut listener = emulator
        .hub()
        .listen_methods(&Identity::device("d1"))
        .unwrap();
    let device = async {
        let req = listener.recv().await.unwrap();
        assert_eq!(
            (req.name.as_str(), req.payload.as_str()),
            ("reboot", r#"{"in":1}"#)
        );
        listener.respond(&req.rid.to_string(), 201, br#"{"out":[1,"2"]}"#);
        listener
    };
    let request = MethodRequest::new("reboot")
        .with_json(r#"{"in":1}"#)
        .unwrap()
        .response_timeout(5);
    let (r, listener) = tokio::join!(client.invoke_method("d1", &request), device);
    let r = r.unwrap();
    assert_eq!((r.status, r.payload.as_str()), (201, r#"{"out":[1,"2"]}"#));

    // Nobody answers: 504101 after the response timeout (the hub clock is real here).
    let started = std::time::Instant::now();
    let e = client.invoke_method("d1", &request).await.unwrap_err();
    assert!(matches!(e, Error::GatewayTimeout { .. }), "{e:?}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    drop(listener);

    let e = client
        .invoke_method("ghost", &MethodRequest::new("m"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    let e = client
        .invoke_method("d1", &MethodRequest::new("m").response_timeout(1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ArgumentInvalid { .. }), "{e:?}");
    client.close().await;
    emulator.shutdown().await;
}
