//! Tests of the method wire types: request bodies as the SDKs send them, payload round trips,
//! name and timeout rules, and the MQTT topics (with property tests for the topic pairs).

use proptest::prelude::*;

use super::*;
use crate::ErrorCode;

fn call(body: &str) -> Result<MethodCall, HubError> {
    CloudToDeviceMethod::from_json(body.as_bytes())?.into_call()
}

#[test]
fn node_body_with_extra_keys_is_read_and_unknown_fields_ignored() {
    // Node posts its whole params object; C# omits zero timeouts; Python sends "" for None.
    let c = call(
        r#"{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":45,"connectTimeoutInSeconds":30,"extra":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(c.name, "reboot");
    assert!(c.payload.is_null());
    assert_eq!((c.connect_timeout_secs, c.response_timeout_secs), (30, 45));

    let c = call(r#"{"methodName":"m"}"#).unwrap();
    assert!(c.payload.is_null(), "absent payload is null");
    assert_eq!(
        (c.connect_timeout_secs, c.response_timeout_secs),
        (DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_RESPONSE_TIMEOUT_SECS)
    );

    let c = call(
        r#"{"methodName":"m","payload":"","responseTimeoutInSeconds":null,"connectTimeoutInSeconds":null}"#,
    )
    .unwrap();
    assert_eq!(c.payload.as_str(), r#""""#);
    assert_eq!(
        c.response_timeout_secs, 30,
        "null timeout means the default"
    );
}

#[test]
fn payloads_round_trip_exactly() {
    for p in [
        "null",
        r#""""#,
        r#""foo""#,
        "{}",
        r#"{"k1":"v1"}"#,
        "[1,2.50,-0,1e400]",
        r#"{"b":1,"a":{"z":[true,false]}}"#,
        r#""\u00e9\ud83d\ude00""#,
        "12345678901234567890123",
    ] {
        let body = format!(r#"{{"methodName":"m","payload":{p}}}"#);
        let c = call(&body).unwrap();
        assert_eq!(c.payload.as_str(), p);
        let result = CloudToDeviceMethodResult {
            status: 200,
            payload: c.payload.clone(),
        };
        assert_eq!(
            serde_json::to_string(&result).unwrap(),
            format!(r#"{{"status":200,"payload":{p}}}"#)
        );
        let back: CloudToDeviceMethodResult =
            serde_json::from_str(&serde_json::to_string(&result).unwrap()).unwrap();
        assert_eq!(back, result);
    }
}

#[test]
fn device_bodies_empty_means_null_and_junk_is_refused() {
    assert!(JsonPayload::from_body(b"").unwrap().is_null());
    assert!(JsonPayload::from_body(b" \r\n").unwrap().is_null());
    assert_eq!(
        JsonPayload::from_body(b" {\"a\": 1} ").unwrap().as_str(),
        "{\"a\": 1}"
    );
    for junk in [&b"'Completed.'"[..], b"{'a':1}", b"\xff", b"1 2", b"NaN"] {
        assert!(
            matches!(
                JsonPayload::from_body(junk),
                Err(PayloadError::NotJson { .. })
            ),
            "{junk:?}"
        );
    }
    let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES - 2));
    assert_eq!(
        JsonPayload::from_body(big.as_bytes()).unwrap().len(),
        131_072
    );
    let over = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES - 1));
    assert_eq!(
        JsonPayload::from_body(over.as_bytes()),
        Err(PayloadError::TooLarge {
            size: 131_073,
            max: MAX_PAYLOAD_BYTES
        })
    );
}

#[test]
fn request_payload_limit_is_128_kb() {
    let ok = format!(
        r#"{{"methodName":"m","payload":"{}"}}"#,
        "x".repeat(MAX_PAYLOAD_BYTES - 2)
    );
    assert_eq!(call(&ok).unwrap().payload.len(), MAX_PAYLOAD_BYTES);
    let over = format!(
        r#"{{"methodName":"m","payload":"{}"}}"#,
        "x".repeat(MAX_PAYLOAD_BYTES - 1)
    );
    let e = call(&over).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MessageTooLarge);
    assert!(e.to_string().contains("131073"), "{e}");
}

#[test]
fn timeouts_outside_the_hubs_ranges_are_argument_invalid_with_the_hubs_text() {
    for (body, text) in [
        (
            r#"{"methodName":"m","responseTimeoutInSeconds":0}"#,
            "responseTimeoutInSeconds must be within [5; 300].",
        ),
        (
            r#"{"methodName":"m","responseTimeoutInSeconds":4}"#,
            "responseTimeoutInSeconds must be within [5; 300].",
        ),
        (
            r#"{"methodName":"m","responseTimeoutInSeconds":3600}"#,
            "responseTimeoutInSeconds must be within [5; 300].",
        ),
        (
            r#"{"methodName":"m","connectTimeoutInSeconds":-1}"#,
            "connectTimeoutInSeconds must be within [0; 300].",
        ),
        (
            r#"{"methodName":"m","connectTimeoutInSeconds":301}"#,
            "connectTimeoutInSeconds must be within [0; 300].",
        ),
    ] {
        let e = call(body).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ArgumentInvalid, "{body}");
        assert_eq!(e.to_string(), text);
    }
    for body in [
        r#"{"methodName":"m","responseTimeoutInSeconds":5,"connectTimeoutInSeconds":0}"#,
        r#"{"methodName":"m","responseTimeoutInSeconds":300,"connectTimeoutInSeconds":300}"#,
    ] {
        assert!(call(body).is_ok(), "{body}");
    }
}

#[test]
fn malformed_bodies_are_argument_invalid() {
    for body in [
        "",
        "not json",
        "[]",
        r#"{"methodName":5}"#,
        r#"{"methodName":"m","responseTimeoutInSeconds":"30"}"#,
        r#"{"methodName":"m","responseTimeoutInSeconds":30.5}"#,
        r#"{"methodName":"m","payload":}"#,
        r#"{"methodName":"m","payload":{'a':1}}"#,
    ] {
        let e = call(body).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ArgumentInvalid, "{body}: {e}");
    }
}

#[test]
fn method_name_rules() {
    for ok in [
        "reboot",
        "getDiagnostics",
        "thermostat1*getMaxMinReport",
        "a.b-c_d~!%&'*`|^",
    ] {
        assert_eq!(validate_method_name(ok), Ok(()), "{ok}");
    }
    let long = "m".repeat(MAX_METHOD_NAME_LEN);
    assert_eq!(validate_method_name(&long), Ok(()));
    assert!(validate_method_name(&format!("{long}m")).is_err());
    for bad in [
        "", "a/b", "a?b", "a b", "a\tb", "a#b", "a+b", "$edge", "é", "a=b", "a\"b", "{x}",
    ] {
        assert!(validate_method_name(bad).is_err(), "{bad:?}");
    }
    let e = call(r#"{"payload":1}"#).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
    assert!(e.to_string().contains("methodName is required"));
    assert!(call(r#"{"methodName":"a/b"}"#).is_err());
}

#[test]
fn service_side_body_serializes_as_the_sdks_send_it() {
    let m = CloudToDeviceMethod::new("reboot", JsonPayload::from_value(&"soon").unwrap());
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"methodName":"reboot","payload":"soon"}"#
    );
    let mut c = MethodCall::new("m", JsonPayload::null());
    c.connect_timeout_secs = 10;
    let m = CloudToDeviceMethod::from(c.clone());
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"methodName":"m","payload":null,"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":10}"#
    );
    assert_eq!(m.into_call().unwrap(), c);
}

#[test]
fn topics_as_the_sdks_write_and_read_them() {
    assert_eq!(
        request_topic("reboot", "1"),
        "$iothub/methods/POST/reboot/?$rid=1"
    );
    assert_eq!(response_topic(200, "1"), "$iothub/methods/res/200/?$rid=1");
    assert_eq!(response_topic(-3, "9"), "$iothub/methods/res/-3/?$rid=9");
    let ok = |status, rid: &str| {
        Ok(ResponseTopic {
            status,
            rid: rid.into(),
        })
    };
    assert_eq!(
        parse_response_topic("$iothub/methods/res/200/?$rid=1"),
        ok(200, "1")
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/200?$rid=1"),
        ok(200, "1")
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/500/?x=y&$rid=abc&z"),
        ok(500, "abc")
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/%2D1/?%24rid=a%2Fb"),
        ok(-1, "a/b")
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/ok/?$rid=1"),
        Err(ResponseTopicError::BadStatus("ok".into()))
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/99999999999/?$rid=1"),
        Err(ResponseTopicError::BadStatus("99999999999".into()))
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/200/"),
        Err(ResponseTopicError::NoRid)
    );
    assert_eq!(
        parse_response_topic("$iothub/methods/res/200/?$rid="),
        Err(ResponseTopicError::NoRid)
    );
    assert_eq!(
        parse_response_topic("$iothub/twin/res/200/?$rid=1"),
        Err(ResponseTopicError::NotAResponse)
    );

    let r = parse_request_topic("$iothub/methods/POST/reboot/?$rid=12").unwrap();
    assert_eq!((r.name, r.rid.as_str()), ("reboot", "12"));
    let r = parse_request_topic("$iothub/methods/POST/m?$rid=1&other=2").unwrap();
    assert_eq!((r.name, r.rid.as_str()), ("m", "1"));
    assert_eq!(
        parse_request_topic("$iothub/methods/POST/a/b/?$rid=1"),
        None
    );
    assert_eq!(parse_request_topic("$iothub/methods/POST//?$rid=1"), None);
    assert_eq!(parse_request_topic("$iothub/methods/POST/m/"), None);
    assert_eq!(parse_request_topic("$iothub/twin/PATCH/x/?$rid=1"), None);
}

fn method_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::char::range('!', '~').prop_filter("name char", |c| is_method_name_char(*c)),
        1..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// Request ids as the hub makes them (decimal) plus other opaque strings without `&`.
fn rid() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        "[A-Za-z0-9_.~-]{1,36}",
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".*".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".*", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn request_topics_round_trip(name in method_name(), rid in rid()) {
        let topic = request_topic(&name, &rid);
        let parsed = parse_request_topic(&topic).unwrap();
        prop_assert_eq!(parsed.name, name.as_str());
        prop_assert_eq!(parsed.rid, rid.clone());
        // The C and C# SDKs take the rest of the topic after `?$rid=` as the request id.
        let tail = format!("?$rid={rid}");
        prop_assert!(topic.ends_with(&tail));
        prop_assert_eq!(topic.split('/').nth(3), Some(name.as_str()));
    }

    #[test]
    fn response_topics_round_trip(status in any::<i32>(), rid in rid()) {
        let parsed = parse_response_topic(&response_topic(status, &rid)).unwrap();
        prop_assert_eq!(parsed, ResponseTopic { status, rid: rid.clone() });
    }

    #[test]
    fn python_quoted_response_topics_parse(status in any::<i32>(), rid in ".{1,20}") {
        // Python: quote(str(status), safe=""), quote(str(request_id), safe="").
        let q = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let topic = format!("$iothub/methods/res/{}/?$rid={}", q(&status.to_string()), q(&rid));
        prop_assert_eq!(parse_response_topic(&topic).unwrap(), ResponseTopic { status, rid });
    }

    #[test]
    fn topic_parsers_never_panic(topic in ".*") {
        let _ = parse_response_topic(&topic);
        let _ = parse_request_topic(&topic);
        let _ = parse_response_topic(&format!("{RESPONSE_TOPIC_PREFIX}{topic}"));
        let _ = parse_request_topic(&format!("{REQUEST_TOPIC_PREFIX}{topic}"));
    }

    #[test]
    fn any_json_payload_round_trips_through_request_and_result(v in json_value(), status in any::<i32>()) {
        let text = serde_json::to_string(&v).unwrap();
        let body = format!(r#"{{"payload":{text},"methodName":"m","ignored":[1]}}"#);
        let c = call(&body).unwrap();
        prop_assert_eq!(c.payload.as_str(), text.as_str());
        let from_device = JsonPayload::from_body(text.as_bytes()).unwrap();
        let result = CloudToDeviceMethodResult { status, payload: from_device };
        // Compared as text: the payload is embedded byte for byte, not re-encoded.
        let wire = serde_json::to_string(&result).unwrap();
        prop_assert_eq!(wire, format!(r#"{{"status":{status},"payload":{text}}}"#));
    }

    #[test]
    fn bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = CloudToDeviceMethod::from_json(&body).and_then(CloudToDeviceMethod::into_call);
        let _ = JsonPayload::from_body(&body);
    }
}
