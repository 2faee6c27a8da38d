//! Telemetry: what a device or module sends, accepted into the event log.
//!
//! Reference: iothub-protocol.md 4.3 and 8, iothub-beyond-c2d.md 3.4. Every transport (MQTT
//! PUBLISH, AMQP device links, HTTPS single and batch) calls the same two operations, which
//! check everything once, here: the sender exists and is enabled, each message is valid and at
//! most 256 KB, a batch is at most 256 KB in all. A batch is all or nothing: nothing is appended
//! unless every message is accepted. An accepted message becomes an [`Event`] in its device's
//! partition, stamped with the sender's identity and authentication, and is also kept in the
//! device's inspection view (the control API's `GET /_emulator/devices/{id}/d2c`).
//!
//! [`Event`]: super::event_log::Event

use iothub_protocol::message::MAX_D2C_SIZE;
use iothub_protocol::registry::DeviceStatus;
use iothub_protocol::{HubError, Message};
use time::OffsetDateTime;

use super::Hub;
use super::event_log::{Appended, ConnectionStamp, EventSource, NewEvent, Origin};
use super::store::{D2cRecord, Store};

/// Clears what only the hub sets: a device cannot choose its message's sequence number,
/// enqueued time, delivery count or lock token.
fn sender_fields_only(mut m: Message) -> Message {
    m.system.sequence_number = None;
    m.system.enqueued_time = None;
    m.system.delivery_count = None;
    m.system.lock_token = None;
    m
}

/// Names the batch item an argument error is about.
fn in_item(index: usize, e: HubError) -> HubError {
    match e {
        HubError::ArgumentInvalid { detail } => {
            HubError::argument(format!("batch item {index}: {detail}"))
        }
        other => other,
    }
}

impl<S: Store> Hub<S> {
    /// Accepts one telemetry message from `origin`.
    ///
    /// Errors: unknown device ([`HubError::DeviceNotFound`]), disabled device, message over
    /// 256 KB ([`HubError::MessageTooLarge`]) or with an invalid property name or message id.
    ///
    /// ```
    /// use iothub_emulator::hub::{Hub, HubSettings};
    /// use iothub_emulator::hub::event_log::Origin;
    /// use iothub_protocol::{EventPosition, Message};
    /// use iothub_protocol::registry::Device;
    ///
    /// let now = time::OffsetDateTime::now_utc();
    /// let mut hub = Hub::new(HubSettings::default(), 1);
    /// hub.create_device(Device::new("d1"), now).unwrap();
    /// let placed = hub.send_telemetry(&Origin::device("d1"), Message::new("21.5"), now).unwrap();
    /// let partition = placed.partition.to_string();
    /// let mut cursor = hub.cursor(&partition, &EventPosition::Earliest).unwrap();
    /// let events = hub.read_events(&mut cursor, 10);
    /// assert_eq!(events[0].message.body, b"21.5");
    /// ```
    pub fn send_telemetry(
        &mut self,
        origin: &Origin,
        message: Message,
        now: OffsetDateTime,
    ) -> Result<Appended, HubError> {
        self.handle_timeout(now);
        let connection = self.sender_stamp(origin)?;
        message.validate_d2c()?;
        let appended = self.accept_telemetry(origin, &connection, message, now);
        self.store.commit(&[&origin.identity.device_id]);
        Ok(appended)
    }

    /// Accepts a batch (HTTPS `application/vnd.microsoft.iothub.json`) from `origin`, all or
    /// nothing: on any error nothing is appended. The messages land consecutively, in order.
    ///
    /// Errors: as [`Hub::send_telemetry`] for each message (argument errors name the item), and
    /// [`HubError::MessageTooLarge`] when the messages add up to more than 256 KB.
    pub fn send_telemetry_batch(
        &mut self,
        origin: &Origin,
        messages: Vec<Message>,
        now: OffsetDateTime,
    ) -> Result<Vec<Appended>, HubError> {
        self.handle_timeout(now);
        let connection = self.sender_stamp(origin)?;
        let size: usize = messages.iter().map(Message::size).sum();
        if size > MAX_D2C_SIZE {
            return Err(HubError::MessageTooLarge {
                size,
                max: MAX_D2C_SIZE,
            });
        }
        for (i, m) in messages.iter().enumerate() {
            m.validate_d2c().map_err(|e| in_item(i, e))?;
        }
        let appended = messages
            .into_iter()
            .map(|m| self.accept_telemetry(origin, &connection, m, now))
            .collect();
        self.store.commit(&[&origin.identity.device_id]);
        Ok(appended)
    }

    /// Checks that the sender may send, and what the hub stamps about its connection.
    /// A module's messages carry the module's generation id, as its connection is the
    /// module's.
    fn sender_stamp(&self, origin: &Origin) -> Result<ConnectionStamp, HubError> {
        let device_id = &origin.identity.device_id;
        let entry = self.entry(device_id)?;
        if entry.device.status == DeviceStatus::Disabled {
            return Err(HubError::DeviceDisabled {
                device_id: device_id.clone(),
            });
        }
        let generation_id = match &origin.identity.module_id {
            Some(m) => self
                .module_entry(device_id, m)?
                .module
                .generation_id
                .clone(),
            None => entry.device.generation_id.clone(),
        };
        Ok(ConnectionStamp {
            auth: origin.auth,
            generation_id,
        })
    }

    /// Appends a checked message and records it in the device's inspection view.
    fn accept_telemetry(
        &mut self,
        origin: &Origin,
        connection: &ConnectionStamp,
        message: Message,
        now: OffsetDateTime,
    ) -> Appended {
        let event = self.append_event(
            NewEvent {
                source: EventSource::Telemetry,
                origin: origin.identity.clone(),
                connection: Some(connection.clone()),
                message: sender_fields_only(message),
            },
            now,
        );
        let keep = self.settings.d2c_retention;
        let device_id = &origin.identity.device_id;
        if let Some(mut entry) = self.store.get_runtime_mut(device_id) {
            let (d2c, count) = entry.telemetry();
            *count += 1;
            if keep > 0 {
                while d2c.len() >= keep {
                    d2c.pop_front();
                }
                d2c.push_back(D2cRecord {
                    sequence_number: *count,
                    received: now,
                    event: event.clone(),
                });
            }
            entry.set_last_activity(now);
            if let Some(m) = &origin.identity.module_id {
                entry.set_module_last_activity(m, now);
            }
        }
        Appended::from(&*event)
    }

    /// The device's recorded telemetry, oldest first (the control API's inspection view; the
    /// last `d2c_retention` messages per device, modules' included).
    pub fn d2c_messages(&self, device_id: &str) -> Result<Vec<D2cRecord>, HubError> {
        Ok(self.entry(device_id)?.d2c.iter().cloned().collect())
    }
}
