//! Direct methods: `POST /twins/{id}/methods` (iothub-beyond-c2d.md 2.1).
//!
//! The call stays open until the device answers or the hub gives up, so its HTTPS timeout is
//! the connect plus response timeout (plus slack), not the client's request timeout.

use std::time::Duration;

use http::Method;
use iothub_protocol::method::{
    CloudToDeviceMethod, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_RESPONSE_TIMEOUT_SECS, JsonPayload,
};

use crate::error::Error;
use crate::https::{Call, Https};
use iothub_protocol::device_id::encode_path_segment;

pub use iothub_protocol::method::CloudToDeviceMethodResult as MethodResponse;

/// Room for the network around the hub's own deadline.
const SLACK: Duration = Duration::from_secs(10);

/// A direct-method invocation: a name, a JSON payload and the hub's two timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodRequest {
    /// The method to call.
    pub name: String,
    /// The payload (`null` by default).
    pub payload: JsonPayload,
    /// Seconds the hub waits for the device to connect and listen (0 to 300; default 0).
    pub connect_timeout_secs: u32,
    /// Seconds the hub waits for the answer (5 to 300; default 30).
    pub response_timeout_secs: u32,
}

impl MethodRequest {
    /// A call of `name` with a `null` payload and the hub's default timeouts.
    pub fn new(name: impl Into<String>) -> Self {
        MethodRequest {
            name: name.into(),
            payload: JsonPayload::null(),
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            response_timeout_secs: DEFAULT_RESPONSE_TIMEOUT_SECS,
        }
    }

    /// The same call with a payload: any JSON value, given as text.
    ///
    /// Errors: [`Error::ArgumentInvalid`] when `json` is not JSON.
    pub fn with_json(mut self, json: &str) -> Result<Self, Error> {
        self.payload = JsonPayload::from_json(json).map_err(|e| Error::ArgumentInvalid {
            message: format!("the method payload is not JSON: {e}"),
        })?;
        Ok(self)
    }

    /// The same call with `connectTimeoutInSeconds`.
    pub fn connect_timeout(mut self, secs: u32) -> Self {
        self.connect_timeout_secs = secs;
        self
    }

    /// The same call with `responseTimeoutInSeconds`.
    pub fn response_timeout(mut self, secs: u32) -> Self {
        self.response_timeout_secs = secs;
        self
    }
}

pub(crate) async fn invoke(
    https: &Https,
    device_id: &str,
    request: &MethodRequest,
) -> Result<MethodResponse, Error> {
    let path = format!("/twins/{}/methods", encode_path_segment(device_id));
    invoke_at(https, &path, request).await
}

/// Invokes a method at `path` (`/twins/{id}/methods` or `/twins/{id}/modules/{mid}/methods`,
/// encoded), which take the same body and answer the same way.
pub(crate) async fn invoke_at(
    https: &Https,
    path: &str,
    request: &MethodRequest,
) -> Result<MethodResponse, Error> {
    let body = CloudToDeviceMethod {
        method_name: request.name.clone(),
        payload: request.payload.clone(),
        response_timeout_in_seconds: Some(request.response_timeout_secs.into()),
        connect_timeout_in_seconds: Some(request.connect_timeout_secs.into()),
    };
    let body = serde_json::to_vec(&body).map_err(|e| Error::ArgumentInvalid {
        message: format!("cannot serialize the method call: {e}"),
    })?;
    let wait = Duration::from_secs(
        u64::from(request.connect_timeout_secs) + u64::from(request.response_timeout_secs),
    );
    let call = Call {
        body: Some(body),
        timeout: Some(wait + SLACK),
        ..Call::new(Method::POST, path)
    };
    https.call_json("invoke method", call).await
}
