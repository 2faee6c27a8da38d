//! The service client: C2D messages and feedback over AMQP, the device registry over HTTPS.

use std::sync::Arc;
use std::time::Duration;

use iothub_protocol::Message;
use iothub_protocol::connection_string::ServiceConnectionString;
use iothub_protocol::registry::{Device, PurgeMessageQueueResult};

use crate::amqp::{self, AmqpHandle};
use crate::config::ServiceClientBuilder;
use crate::error::Error;
use crate::feedback::FeedbackReceiver;
use crate::https::{Https, IfMatch};
use crate::registry;

/// A client for a hub's service side: C2D messages, feedback and the device registry.
///
/// Cheap to clone; clones share one AMQP connection and one HTTPS pool. Needs a Tokio runtime
/// for its async methods (it can be built outside one). The connection closes when the last
/// clone (and the last [`FeedbackReceiver`]) is dropped, or on [`close`](Self::close).
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

struct Inner {
    connection_string: ServiceConnectionString,
    amqp: AmqpHandle,
    https: Https,
    request_timeout: Duration,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("host_name", &self.inner.connection_string.host_name)
            .field("key_name", &self.inner.connection_string.key_name)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    pub(crate) fn new(
        connection_string: ServiceConnectionString,
        amqp: AmqpHandle,
        https: Https,
        request_timeout: Duration,
    ) -> Self {
        ServiceClient {
            inner: Arc::new(Inner {
                connection_string,
                amqp,
                https,
                request_timeout,
            }),
        }
    }

    /// The HTTPS pool, for the operations other files add (`twins.rs`).
    pub(crate) fn https(&self) -> &Https {
        &self.inner.https
    }

    /// A client with every option at its default for this connection string
    /// (`HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`): the platform's roots plus
    /// `IOTHUB_CA_CERT` if set, ports 5671 and 443 (or a `:port` in `HostName` for AMQP),
    /// one-hour tokens. Nothing is connected yet.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), iothub_service::Error> {
    /// let client = iothub_service::ServiceClient::from_connection_string(
    ///     "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=...",
    /// )?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn from_connection_string(connection_string: &str) -> Result<ServiceClient, Error> {
        Self::builder(connection_string)?.build()
    }

    /// A builder to set options first; see [`ServiceClientBuilder`].
    pub fn builder(connection_string: &str) -> Result<ServiceClientBuilder, Error> {
        ServiceClientBuilder::new(connection_string)
    }

    /// The connection string's `HostName`.
    pub fn host_name(&self) -> &str {
        &self.inner.connection_string.host_name
    }

    /// The hub name: the first label of the host name.
    pub fn hub_name(&self) -> &str {
        self.inner.connection_string.hub_name()
    }

    /// Sends a C2D message to a device and returns once the hub has enqueued it.
    ///
    /// Everything set in `message` is sent: body, message id, correlation id, user id,
    /// absolute expiry, content type and encoding, application properties, and the ack mode
    /// (as `iothub-ack`; [`AckMode::None`](crate::AckMode::None) sends none). `to` is always set by the client to
    /// the device's endpoint (any `to` in `message` is ignored). Give the message an id when
    /// asking for feedback: records refer to it as `originalMessageId`.
    ///
    /// Calls may run concurrently (for example `join_all` over thousands of sends): they share
    /// one link and are pipelined.
    ///
    /// Errors: [`Error::DeviceNotFound`], [`Error::DeviceMaximumQueueDepthExceeded`]
    /// (403004), [`Error::MessageTooLarge`], [`Error::Unauthorized`], [`Error::Throttled`],
    /// [`Error::ArgumentInvalid`], other [`Error::Hub`] rejections, [`Error::Connection`],
    /// [`Error::Tls`], [`Error::Timeout`] (after
    /// [`request_timeout`](ServiceClientBuilder::request_timeout)). After a connection or
    /// timeout error the message may or may not have been enqueued.
    pub async fn send_c2d(&self, device_id: &str, message: &Message) -> Result<(), Error> {
        let amqp_message = amqp::convert::c2d_message(device_id, message);
        let limit = self.inner.request_timeout;
        tokio::time::timeout(limit, self.inner.amqp.send(amqp_message))
            .await
            .map_err(|_| Error::Timeout {
                operation: "sending a C2D message",
                after: limit,
            })?
    }

    /// Opens a receiver of feedback batches (a new link on the client's AMQP connection).
    ///
    /// Usually one receiver per application: the hub hands each batch to one receiver.
    pub async fn feedback(&self) -> Result<FeedbackReceiver, Error> {
        let link = self.inner.amqp.open_feedback().await?;
        Ok(FeedbackReceiver::new(self.inner.amqp.clone(), link))
    }

    /// Invokes a direct method on a device and waits for its answer: the status and payload
    /// the device chose (`POST /twins/{id}/methods`). The call waits up to the request's
    /// connect plus response timeout.
    ///
    /// Errors: [`Error::DeviceNotOnline`] (404103: not connected and listening within the
    /// connect timeout), [`Error::GatewayTimeout`] (504101: no answer within the response
    /// timeout), [`Error::DeviceNotFound`], [`Error::ArgumentInvalid`] (name or timeouts out
    /// of range), [`Error::Unauthorized`], ...
    pub async fn invoke_method(
        &self,
        device_id: &str,
        request: &crate::MethodRequest,
    ) -> Result<crate::MethodResponse, Error> {
        crate::methods::invoke(&self.inner.https, device_id, request).await
    }

    /// Registers a device and returns it as stored, with the keys the hub generated when
    /// `device` has none (`PUT /devices/{id}` without `If-Match`).
    ///
    /// Errors: [`Error::DeviceAlreadyExists`], [`Error::ArgumentInvalid`],
    /// [`Error::Unauthorized`], ...
    pub async fn create_device(&self, device: &Device) -> Result<Device, Error> {
        registry::create_device(&self.inner.https, device).await
    }

    /// Reads a device (`GET /devices/{id}`). Errors: [`Error::DeviceNotFound`], ...
    pub async fn get_device(&self, device_id: &str) -> Result<Device, Error> {
        registry::get_device(&self.inner.https, device_id).await
    }

    /// Replaces a device (`PUT /devices/{id}` with `If-Match`) and returns it as stored, with
    /// its new etag. Use [`IfMatch::from_device`] for an update that fails with
    /// [`Error::PreconditionFailed`] when someone else changed the device since it was read,
    /// or [`IfMatch::Any`] to force it.
    pub async fn update_device(&self, device: &Device, if_match: IfMatch) -> Result<Device, Error> {
        registry::update_device(&self.inner.https, device, &if_match).await
    }

    /// Deletes a device (`DELETE /devices/{id}` with `If-Match`), its C2D queue and its pending
    /// feedback. Errors: [`Error::DeviceNotFound`], [`Error::PreconditionFailed`], ...
    pub async fn delete_device(&self, device_id: &str, if_match: IfMatch) -> Result<(), Error> {
        registry::delete_device(&self.inner.https, device_id, &if_match).await
    }

    /// Lists devices (`GET /devices?top=N`): at most `top`, which the hub takes from 1 to
    /// 1000 (other values mean 1000).
    pub async fn list_devices(&self, top: usize) -> Result<Vec<Device>, Error> {
        registry::list_devices(&self.inner.https, top).await
    }

    /// Deletes every pending C2D message of a device (`DELETE /devices/{id}/commands`) and says
    /// how many there were. Errors: [`Error::DeviceNotFound`], ...
    pub async fn purge_c2d(&self, device_id: &str) -> Result<PurgeMessageQueueResult, Error> {
        registry::purge_c2d(&self.inner.https, device_id).await
    }

    /// Closes the AMQP connection (for every clone and feedback receiver). Later sends and
    /// feedback calls fail with [`Error::Closed`]; registry calls still work.
    pub async fn close(&self) {
        self.inner.amqp.close().await;
    }
}
