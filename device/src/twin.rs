//! The device's twin (iothub-beyond-c2d.md 1): read it, report properties, follow desired
//! changes. MQTT only, as in the official SDKs: the hub has no twin API for devices over
//! HTTPS.

use std::time::Duration;

use bytes::Bytes;
use iothub_protocol::twin::TwinProperties;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::client::DeviceClient;
use crate::error::Error;
use crate::mqtt::{Command, Commands, TwinAnswer, TwinCommand};

pub use crate::mqtt::DesiredUpdate;

/// How long a twin request waits for the hub's answer (the C# SDK's twin timeout).
pub const TWIN_TIMEOUT: Duration = Duration::from_secs(60);

const HTTPS_UNSUPPORTED: Error = Error::Unsupported {
    what: "device twins over HTTPS (the hub offers twins to devices over MQTT and AMQP only); use Transport::Mqtt",
};

impl DeviceClient {
    fn twin_commands(&self) -> Result<&Commands, Error> {
        self.mqtt_commands()?.ok_or(HTTPS_UNSUPPORTED)
    }

    async fn twin_request(&self, patch: Option<Bytes>) -> Result<TwinAnswer, Error> {
        let cmd = self.twin_commands()?;
        let (reply, rx) = oneshot::channel();
        cmd.send(Command::Twin(TwinCommand::Request { patch, reply }))
            .map_err(|_| self.stopped_error())?;
        match tokio::time::timeout(TWIN_TIMEOUT, rx).await {
            Err(_) => Err(Error::Timeout {
                operation: "a twin request",
                after: TWIN_TIMEOUT,
            }),
            Ok(Err(_)) => Err(self.stopped_error()),
            Ok(Ok(r)) => r,
        }
    }

    /// Reads the twin as the device sees it: desired and reported properties, each with its
    /// `$version` (no tags, no `$metadata`).
    ///
    /// Errors: [`Error::Unsupported`] over HTTPS, [`Error::Timeout`] after [`TWIN_TIMEOUT`],
    /// the hub's errors, [`Error::Closed`].
    pub async fn twin(&self) -> Result<TwinProperties, Error> {
        let (_, body) = self.twin_request(None).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            message: format!("the twin the hub sent is not the expected JSON: {e}"),
        })
    }

    /// Merges `patch` (a JSON object; `null` removes a key) into the reported properties and
    /// returns their new `$version`.
    ///
    /// Errors: [`Error::ArgumentInvalid`] for a patch that is not an object or that the hub
    /// refuses (key characters, depth, sizes), and those of [`twin`](Self::twin).
    pub async fn update_reported(&self, patch: &Value) -> Result<i64, Error> {
        if !patch.is_object() {
            return Err(Error::ArgumentInvalid {
                message: "the reported properties patch must be a JSON object".to_owned(),
            });
        }
        let body = serde_json::to_vec(patch).map_err(|e| Error::ArgumentInvalid {
            message: format!("cannot serialize the reported patch: {e}"),
        })?;
        let (version, _) = self.twin_request(Some(Bytes::from(body))).await?;
        version.ok_or_else(|| Error::Protocol {
            message: "the hub's answer to a reported patch carries no $version".to_owned(),
        })
    }

    /// The desired-property patches the hub sends from now on, in version order. The client
    /// subscribes on the first call (and again whenever the hub lost the session); a later
    /// call takes the patches over from an earlier stream.
    ///
    /// The hub does not queue patches while the device is offline: after a reconnect, read
    /// [`twin`](Self::twin) and skip patches whose version is not above its desired
    /// `$version`.
    pub fn desired_updates(&self) -> Result<DesiredUpdates, Error> {
        let cmd = self.twin_commands()?;
        let (tx, rx) = mpsc::unbounded_channel();
        cmd.send(Command::Twin(TwinCommand::Desired(tx)))
            .map_err(|_| self.stopped_error())?;
        Ok(DesiredUpdates { rx })
    }
}

/// Desired-property patches, from [`DeviceClient::desired_updates`].
#[derive(Debug)]
pub struct DesiredUpdates {
    rx: mpsc::UnboundedReceiver<DesiredUpdate>,
}

impl DesiredUpdates {
    /// The next patch; `None` once the client stopped or another stream took over.
    pub async fn next(&mut self) -> Option<DesiredUpdate> {
        self.rx.recv().await
    }
}
