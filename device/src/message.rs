//! A received C2D message and how it is settled.

use std::fmt;
use std::sync::Arc;

use iothub_protocol::{AckMode, Message, MessageId, Properties, SystemProperties};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::config::Transport;
use crate::error::Error;
use crate::https::Https;
use crate::mqtt::{Command, Commands};

/// How a message is settled, if it still has to be.
pub(crate) enum Settle {
    /// Nothing left to do: completed automatically, received at QoS 0, or already settled.
    Done,
    /// Over MQTT: a PUBACK for `pkid` on connection `generation`.
    Mqtt {
        generation: u64,
        pkid: u16,
        tx: Commands,
    },
    /// Over HTTPS: a request naming the lock token.
    Https {
        lock_token: String,
        https: Arc<Https>,
    },
}

/// A cloud-to-device message, as the device received it.
///
/// It carries the body, the system properties (message id, correlation id, content type and
/// encoding, expiry, ...) and the application properties the service set.
///
/// # Settling
///
/// In [`CompletionMode::Automatic`](crate::CompletionMode::Automatic) (the default) the message
/// was completed when it was handed over, and [`complete`](Self::complete) does nothing.
///
/// In [`CompletionMode::Manual`](crate::CompletionMode::Manual) the application settles it:
/// * [`complete`](Self::complete): done with it (positive feedback if the service asked).
///   Over MQTT this sends the PUBACK; PUBACKs go out in the order the messages arrived
///   ([MQTT-4.6.0-2]), so completing a message before an earlier one holds its PUBACK back
///   until the earlier one is completed or dropped.
/// * [`reject`](Self::reject): dead-letter it (negative feedback). HTTPS only.
/// * [`abandon`](Self::abandon): give it back to the queue to be delivered again. HTTPS only.
/// * dropping it unsettled: MQTT leaves it unacknowledged, so the hub delivers it again after
///   the next reconnect; HTTPS lets its lock expire (one minute), after which the hub delivers
///   it again.
///
/// Over MQTT a message can only be settled on the connection it arrived on: after a
/// reconnect, [`complete`](Self::complete) fails with [`Error::DeviceMessageLockLost`] and the hub delivers
/// the message again (at-least-once).
#[must_use = "in manual completion mode a message is only completed by calling complete()"]
pub struct ReceivedMessage {
    message: Message,
    settle: Settle,
    transport: Transport,
}

impl fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("message", &self.message)
            .field("transport", &self.transport)
            .field("settled", &matches!(self.settle, Settle::Done))
            .finish()
    }
}

impl ReceivedMessage {
    pub(crate) fn new(message: Message, settle: Settle, transport: Transport) -> Self {
        ReceivedMessage {
            message,
            settle,
            transport,
        }
    }

    /// The MQTT connection the message arrived on, if it must be settled on it.
    pub(crate) fn mqtt_generation(&self) -> Option<u64> {
        match &self.settle {
            Settle::Mqtt { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// Takes the settlement out, leaving [`Settle::Done`].
    pub(crate) fn take_settle(&mut self) -> Settle {
        std::mem::replace(&mut self.settle, Settle::Done)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.message.body
    }

    /// The body as text, if it is UTF-8.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.message.body).ok()
    }

    /// The application (custom) properties, in the order they arrived.
    ///
    /// Over HTTPS they travel as `iothub-app-<name>` headers. HTTP header names are
    /// case-insensitive and this client reads them lower-cased, so property names arrive in
    /// lower case; values outside printable ASCII arrive as the hub escaped them (the emulator
    /// percent-encodes them). MQTT keeps names and values exactly.
    pub fn properties(&self) -> &Properties {
        &self.message.properties
    }

    /// All system properties.
    pub fn system_properties(&self) -> &SystemProperties {
        &self.message.system
    }

    /// The message id the service set.
    pub fn message_id(&self) -> Option<&MessageId> {
        self.message.system.message_id.as_ref()
    }

    /// The correlation id the service set.
    pub fn correlation_id(&self) -> Option<&MessageId> {
        self.message.system.correlation_id.as_ref()
    }

    /// The user id the service set.
    pub fn user_id(&self) -> Option<&str> {
        self.message.system.user_id.as_deref()
    }

    /// The body's content type (`$.ct`).
    pub fn content_type(&self) -> Option<&str> {
        self.message.system.content_type.as_deref()
    }

    /// The body's content encoding (`$.ce`).
    pub fn content_encoding(&self) -> Option<&str> {
        self.message.system.content_encoding.as_deref()
    }

    /// When the message expires.
    pub fn expiry(&self) -> Option<OffsetDateTime> {
        self.message.system.absolute_expiry
    }

    /// The feedback the service asked for.
    pub fn ack(&self) -> AckMode {
        self.message.system.ack
    }

    /// How many times the message was delivered before (HTTPS only; MQTT does not say).
    pub fn delivery_count(&self) -> Option<u32> {
        self.message.system.delivery_count
    }

    /// The lock token (HTTPS only).
    pub fn lock_token(&self) -> Option<&str> {
        self.message.system.lock_token.as_deref()
    }

    /// The whole message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The transport it arrived over.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The message itself, giving up settling it: in manual mode this is the same as dropping
    /// it unsettled.
    pub fn into_message(mut self) -> Message {
        std::mem::take(&mut self.message)
    }

    /// Completes the message: the hub removes it from the device's queue and sends positive
    /// feedback if the service asked for it.
    ///
    /// Over MQTT this resolves once the PUBACK is queued on the connection (PUBACK itself has
    /// no answer); over HTTPS once the hub answered the `DELETE`. In automatic mode it does
    /// nothing.
    pub async fn complete(mut self) -> Result<(), Error> {
        match self.take_settle() {
            Settle::Done => Ok(()),
            Settle::Mqtt {
                generation,
                pkid,
                tx,
            } => {
                let (reply, rx) = oneshot::channel();
                tx.send(Command::Settle {
                    generation,
                    pkid,
                    ack: true,
                    reply: Some(reply),
                })
                .map_err(|_| Error::Closed)?;
                rx.await.map_err(|_| Error::Closed)?
            }
            Settle::Https { lock_token, https } => https.complete(&lock_token).await,
        }
    }

    /// Rejects the message: the hub dead-letters it and sends negative feedback if the
    /// service asked for it. HTTPS only; over MQTT this is [`Error::NotSupported`], as in the
    /// official SDKs.
    pub async fn reject(mut self) -> Result<(), Error> {
        self.https_settle("reject").await
    }

    /// Abandons the message: the hub puts it back in the device's queue (its delivery count
    /// goes up) and delivers it again. HTTPS only; over MQTT this is [`Error::NotSupported`].
    pub async fn abandon(mut self) -> Result<(), Error> {
        self.https_settle("abandon").await
    }

    async fn https_settle(&mut self, operation: &'static str) -> Result<(), Error> {
        if self.transport.is_mqtt() {
            return Err(Error::NotSupported {
                operation,
                transport: self.transport,
            });
        }
        match self.take_settle() {
            Settle::Https { lock_token, https } => match operation {
                "reject" => https.reject(&lock_token).await,
                _ => https.abandon(&lock_token).await,
            },
            other => {
                self.settle = other;
                Err(Error::AlreadyCompleted { operation })
            }
        }
    }
}

impl Drop for ReceivedMessage {
    fn drop(&mut self) {
        if let Settle::Mqtt {
            generation,
            pkid,
            tx,
        } = self.take_settle()
        {
            // Let later messages' PUBACKs go out; this one stays unacknowledged.
            let _ = tx.send(Command::Settle {
                generation,
                pkid,
                ack: false,
                reply: None,
            });
        }
    }
}
