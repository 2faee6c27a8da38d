//! From AMQP outcomes and link failures to [`Error`]: the hub's error condition when it gave
//! one (read by the shared [`HubReply::from_amqp_error`]), else a connection error that keeps
//! fe2o3's error as its cause.

use fe2o3_amqp::link::{
    DetachError, LinkStateError, ReceiverAttachError, SendError, SenderAttachError,
};
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::Outcome;
use iothub_protocol::client::HubReply;

use crate::Error;

/// The [`Error`] for an AMQP error sent by the hub.
pub(crate) fn from_amqp_error(e: &definitions::Error) -> Error {
    Error::from_reply(HubReply::from_amqp_error(e))
}

/// The result of a C2D send from the hub's outcome.
pub(crate) fn outcome_result(outcome: Outcome) -> Result<(), Error> {
    let hub = |condition: &str, message: &str| Error::Hub {
        status: None,
        code: None,
        condition: Some(condition.to_owned()),
        message: message.to_owned(),
    };
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        Outcome::Rejected(r) => Err(match r.error {
            Some(e) => from_amqp_error(&e),
            None => hub(
                "rejected",
                "the hub rejected the message without saying why",
            ),
        }),
        Outcome::Released(_) => Err(hub(
            "released",
            "the hub released the message without enqueuing it; send it again",
        )),
        Outcome::Modified(_) => Err(hub(
            "modified",
            "the hub returned the message as modified without enqueuing it; send it again",
        )),
    }
}

/// The [`Error`] for a link that stopped: the hub's condition when it detached the link with
/// one, else a connection error.
pub(crate) fn link_state_error(e: LinkStateError, what: &str) -> Error {
    match e {
        LinkStateError::RemoteDetachedWithError(err)
        | LinkStateError::RemoteClosedWithError(err) => from_amqp_error(&err),
        other => Error::connection(format!("{what}: the AMQP link failed"), other),
    }
}

/// The [`Error`] for a failed send on the C2D link.
pub(crate) fn send_error(e: SendError) -> Error {
    match e {
        SendError::MessageSizeExceeded(m) => Error::MessageTooLarge {
            message: m.to_string(),
        },
        SendError::LinkStateError(l) => link_state_error(l, "C2D send"),
        SendError::Detached(d) => detach_error(d, "C2D send"),
        other => Error::connection("C2D send failed", other),
    }
}

/// The [`Error`] for a link that detached.
pub(crate) fn detach_error(e: DetachError, what: &str) -> Error {
    match e {
        DetachError::RemoteDetachedWithError(err) | DetachError::RemoteClosedWithError(err) => {
            from_amqp_error(&err)
        }
        other => Error::connection(format!("{what}: the AMQP link was detached"), other),
    }
}

/// The [`Error`] for a sender link the hub refused (its condition when it gave one).
pub(crate) fn sender_attach_error(e: SenderAttachError, what: &str) -> Error {
    match e {
        SenderAttachError::RemoteClosedWithError(err) => from_amqp_error(&err),
        other => Error::connection(format!("cannot attach {what}"), other),
    }
}

/// The [`Error`] for a receiver link the hub refused (its condition when it gave one).
pub(crate) fn receiver_attach_error(e: ReceiverAttachError, what: &str) -> Error {
    match e {
        ReceiverAttachError::RemoteClosedWithError(err) => from_amqp_error(&err),
        other => Error::connection(format!("cannot attach {what}"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, LinkError};
    use fe2o3_amqp::types::messaging::{Accepted, Rejected, Released};
    use fe2o3_amqp::types::primitives::Symbol;

    #[test]
    fn outcomes_map_to_results() {
        assert!(outcome_result(Outcome::Accepted(Accepted {})).is_ok());
        let rejected = |c: ErrorCondition| {
            outcome_result(Outcome::Rejected(Rejected {
                error: Some(definitions::Error::new(c, Some("d".to_owned()), None)),
            }))
            .unwrap_err()
        };
        assert!(matches!(
            rejected(AmqpError::NotFound.into()),
            Error::DeviceNotFound { .. }
        ));
        assert!(matches!(
            rejected(AmqpError::ResourceLimitExceeded.into()),
            Error::DeviceMaximumQueueDepthExceeded { .. }
        ));
        assert!(matches!(
            rejected(LinkError::MessageSizeExceeded.into()),
            Error::MessageTooLarge { .. }
        ));
        assert!(matches!(
            rejected(AmqpError::UnauthorizedAccess.into()),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            rejected(ErrorCondition::Custom(Symbol::from(
                "com.microsoft:device-container-throttled"
            ))),
            Error::Throttled { .. }
        ));
        assert!(matches!(
            rejected(ErrorCondition::Custom(Symbol::from(
                "com.microsoft:argument-error"
            ))),
            Error::ArgumentInvalid { .. }
        ));
        assert!(matches!(
            outcome_result(Outcome::Released(Released {})),
            Err(Error::Hub { .. })
        ));
        assert!(matches!(
            outcome_result(Outcome::Rejected(Rejected { error: None })),
            Err(Error::Hub { .. })
        ));
    }
}
