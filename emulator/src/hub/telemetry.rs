//! Telemetry (D2C): recording what devices send, and reading it back.

use iothub_protocol::{HubError, Message};
use time::OffsetDateTime;

use super::Hub;
use super::store::{D2cRecord, Store};

impl<S: Store> Hub<S> {
    /// Records telemetry from a device, keeping the last `d2c_retention` messages.
    pub fn record_d2c(
        &mut self,
        device_id: &str,
        message: Message,
        now: OffsetDateTime,
    ) -> Result<u64, HubError> {
        self.handle_timeout(now);
        message.validate_d2c()?;
        let keep = self.settings.d2c_retention;
        let entry = self.entry_mut(device_id)?;
        entry.d2c_count += 1;
        let sequence_number = entry.d2c_count;
        if keep > 0 {
            while entry.d2c.len() >= keep {
                entry.d2c.pop_front();
            }
            entry.d2c.push_back(D2cRecord {
                sequence_number,
                received: now,
                message,
            });
        }
        self.set_connection_state_activity(device_id, now);
        self.store.commit(&[device_id]);
        Ok(sequence_number)
    }

    /// The device's recorded telemetry, oldest first.
    pub fn d2c_messages(&self, device_id: &str) -> Result<Vec<D2cRecord>, HubError> {
        Ok(self.entry(device_id)?.d2c.iter().cloned().collect())
    }
}
