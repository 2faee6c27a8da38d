//! Who a twin, a method call or a telemetry message belongs to: a device, or a module on a
//! device.
//!
//! Twins, direct methods and telemetry work the same way for devices and for their modules
//! (iothub-beyond-c2d.md 4); keying every per-identity table by [`Identity`] lets each feature
//! serve modules without a second code path.

use std::fmt;

/// A device identity, or a module identity under a device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// The device id.
    pub device_id: String,
    /// The module id, for a module identity.
    pub module_id: Option<String>,
}

impl Identity {
    /// The identity of a device.
    pub fn device(device_id: impl Into<String>) -> Self {
        Identity {
            device_id: device_id.into(),
            module_id: None,
        }
    }

    /// The identity of a module on a device.
    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Identity {
            device_id: device_id.into(),
            module_id: Some(module_id.into()),
        }
    }

    /// True for a module identity.
    pub fn is_module(&self) -> bool {
        self.module_id.is_some()
    }
}

/// `device` or `device/module`, the form MQTT client ids and log lines use.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module_id {
            Some(m) => write!(f, "{}/{m}", self.device_id),
            None => f.write_str(&self.device_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_devices_and_modules_as_client_ids() {
        assert_eq!(Identity::device("d1").to_string(), "d1");
        assert_eq!(Identity::module("d1", "m1").to_string(), "d1/m1");
        assert!(Identity::module("d1", "m1").is_module());
        assert!(!Identity::device("d1").is_module());
    }
}
