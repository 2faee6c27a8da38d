//! The one place where a [`HubError`] becomes an AMQP error (iothub-protocol.md 5.4, 5.6).
//!
//! Conditions are the ones the SDKs' error maps turn into the matching exception (C#
//! `AmqpErrorMapper.cs`, Node `amqp_common_errors`): `amqp:not-found` → DeviceNotFound,
//! `amqp:resource-limit-exceeded` → DeviceMaximumQueueDepthExceeded, and so on. The description is
//! the error's own text, which carries the hub's wording (e.g. the 403004 queue-limit message).

use fe2o3_amqp::link::SendError;
use fe2o3_amqp_types::definitions::{AmqpError, Error, ErrorCondition, LinkError};
use fe2o3_amqp_types::primitives::Symbol;
use iothub_protocol::HubError;

/// `com.microsoft:argument-error`: a malformed argument (bad `to`, property name, message id).
pub const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
/// `com.microsoft:message-lock-lost`: a settlement after the lock was gone.
pub const MESSAGE_LOCK_LOST: &str = "com.microsoft:message-lock-lost";
/// `com.microsoft:precondition-failed`: an If-Match style precondition did not hold.
pub const PRECONDITION_FAILED: &str = "com.microsoft:precondition-failed";

/// The AMQP error a hub error is reported as: the condition the SDKs map back to the same
/// exception, and the error's text as description.
pub fn error_for(e: &HubError) -> Error {
    let condition: ErrorCondition = match e {
        HubError::DeviceNotFound { .. } | HubError::ModuleNotFound { .. } => {
            AmqpError::NotFound.into()
        }
        HubError::DeviceMaximumQueueDepthExceeded { .. } => AmqpError::ResourceLimitExceeded.into(),
        HubError::MessageTooLarge { .. } => LinkError::MessageSizeExceeded.into(),
        HubError::ArgumentInvalid { .. } => custom(ARGUMENT_ERROR),
        HubError::Unauthorized { .. } | HubError::DeviceDisabled { .. } => {
            AmqpError::UnauthorizedAccess.into()
        }
        HubError::DeviceMessageLockLost { .. } => custom(MESSAGE_LOCK_LOST),
        HubError::PreconditionFailed { .. } => custom(PRECONDITION_FAILED),
        HubError::DeviceAlreadyExists { .. }
        | HubError::ModuleAlreadyExistsOnDevice { .. }
        | HubError::InvalidOperation { .. } => AmqpError::NotAllowed.into(),
        _ => AmqpError::InternalError.into(),
    };
    Error::new(condition, e.to_string(), None)
}

/// A link refused because nothing lives at the address it named.
pub fn unknown_address(address: &str) -> Error {
    Error::new(
        AmqpError::NotFound,
        format!(
            "no node at '{address}'; the hub serves $cbs, /messages/devicebound, /messages/serviceBound/feedback, /devices/{{id}}/messages/devicebound, /devices/{{id}}/messages/events, /devices/{{id}}/twin, /devices/{{id}}/methods/devicebound and the same under /devices/{{id}}/modules/{{mid}} (messages/events, twin, methods/devicebound)"
        ),
        None,
    )
}

/// Why a sending link ends when fe2o3 cannot send the next message on it.
pub fn cannot_send(e: &SendError) -> Error {
    let condition: ErrorCondition = match e {
        SendError::MessageSizeExceeded(_) => LinkError::MessageSizeExceeded.into(),
        _ => AmqpError::InternalError.into(),
    };
    Error::new(
        condition,
        format!("the hub could not send the next message on this link: {e}"),
        None,
    )
}

/// A message that could not be decoded.
pub fn decode_error(detail: impl Into<String>) -> Error {
    Error::new(AmqpError::DecodeError, detail.into(), None)
}

fn custom(name: &str) -> ErrorCondition {
    ErrorCondition::Custom(Symbol::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(e: HubError) -> String {
        match error_for(&e).condition {
            ErrorCondition::AmqpError(a) => Symbol::from(&a).0,
            ErrorCondition::LinkError(l) => Symbol::from(&l).0,
            ErrorCondition::Custom(s) => s.0,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn hub_errors_map_to_the_conditions_the_sdks_know() {
        let id = || "d".to_owned();
        assert_eq!(
            condition(HubError::DeviceNotFound { device_id: id() }),
            "amqp:not-found"
        );
        assert_eq!(
            condition(HubError::DeviceMaximumQueueDepthExceeded {
                device_id: id(),
                depth: 50
            }),
            "amqp:resource-limit-exceeded"
        );
        assert_eq!(
            condition(HubError::MessageTooLarge { size: 1, max: 0 }),
            "amqp:link:message-size-exceeded"
        );
        assert_eq!(
            condition(HubError::argument("bad")),
            "com.microsoft:argument-error"
        );
        assert_eq!(
            condition(HubError::unauthorized("no")),
            "amqp:unauthorized-access"
        );
        assert_eq!(
            condition(HubError::DeviceDisabled { device_id: id() }),
            "amqp:unauthorized-access"
        );
        assert_eq!(
            condition(HubError::DeviceMessageLockLost {
                lock_token: "t".into()
            }),
            "com.microsoft:message-lock-lost"
        );
    }

    #[test]
    fn queue_full_carries_the_403004_text() {
        let e = error_for(&HubError::DeviceMaximumQueueDepthExceeded {
            device_id: "d".into(),
            depth: 50,
        });
        let text = e.description.unwrap_or_default();
        assert!(text.contains("queue limit of 50"), "{text}");
        assert!(text.contains("iothub403004"), "{text}");
    }
}
