//! Claims-based security: putting a SAS token on the connection (iothub-protocol.md 5.3).
//!
//! Written by hand rather than with `fe2o3-amqp-cbs`, which insists on status 202, while the
//! hub answers 200 (the Node SDK accepts only 200) and the C# SDK accepts both. Here 200 and
//! 202 are success; 401 and 403 are [`Error::Unauthorized`].
//!
//! A request goes on a sender link to `$cbs`; its reply comes back on a receiver link from
//! `$cbs`, matched by `correlation-id` = the request's `message-id`. One request is in flight at
//! a time (the connection task owns this), so matching is a simple loop.

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message as AmqpMessage, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};

use iothub_protocol::ErrorCode;

use super::errors::{detach_error, from_amqp_error, receiver_attach_error, sender_attach_error};
use crate::Error;

/// The CBS node.
const CBS_NODE: &str = "$cbs";
/// The address the replies are sent to (what the Node SDK uses).
const REPLY_TO: &str = "cbs";
/// The token type of a SAS token.
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// The two CBS links of one connection.
pub(crate) struct Cbs {
    sender: Sender,
    receiver: Receiver,
    next_id: u64,
}

impl Cbs {
    /// Attaches the request and reply links.
    pub async fn attach(session: &mut SessionHandle<()>, suffix: &str) -> Result<Self, Error> {
        let sender = Sender::builder()
            .name(format!("cbs-sender-{suffix}"))
            .target(CBS_NODE)
            .attach(session)
            .await
            .map_err(|e| sender_attach_error(e, "the CBS sender link to $cbs"))?;
        let receiver = Receiver::builder()
            .name(format!("cbs-receiver-{suffix}"))
            .source(CBS_NODE)
            .target(REPLY_TO)
            .attach(session)
            .await
            .map_err(|e| receiver_attach_error(e, "the CBS receiver link from $cbs"))?;
        Ok(Cbs {
            sender,
            receiver,
            next_id: 0,
        })
    }

    /// Puts `token` for `audience` (the hub host name) and waits for the hub's answer.
    pub async fn put_token(&mut self, audience: &str, token: &str) -> Result<(), Error> {
        self.next_id += 1;
        let id = format!("put-token-{}", self.next_id);
        let request = AmqpMessage::builder()
            .properties(Properties {
                message_id: Some(MessageId::String(id.clone())),
                reply_to: Some(REPLY_TO.to_owned()),
                ..Properties::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", SAS_TOKEN_TYPE)
                    .insert("name", audience)
                    .build(),
            )
            .value(token.to_owned())
            .build();
        let outcome = self.sender.send(request).await.map_err(|e| match e {
            fe2o3_amqp::link::SendError::Detached(d) => detach_error(d, "CBS put-token"),
            other => Error::connection("CBS put-token could not be sent", other),
        })?;
        match outcome {
            Outcome::Accepted(_) => {}
            Outcome::Rejected(r) => {
                return Err(r.error.as_ref().map(from_amqp_error).unwrap_or_else(|| {
                    Error::Unauthorized {
                        message: "the hub rejected the CBS put-token request".to_owned(),
                        code: ErrorCode::IotHubUnauthorizedAccess,
                    }
                }));
            }
            other => {
                return Err(Error::protocol(format!(
                    "the hub settled the CBS put-token request as {other:?}"
                )));
            }
        }
        loop {
            let reply = self
                .receiver
                .recv::<Body<Value>>()
                .await
                .map_err(|e| Error::connection("no reply to CBS put-token", e))?;
            // Settling a reply cannot fail in a way that matters: the answer is already here.
            let _ = self.receiver.accept(&reply).await;
            let message = reply.message();
            let correlates = message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.as_ref())
                .is_none_or(|c| *c == MessageId::String(id.clone()));
            if !correlates {
                tracing::debug!("ignoring a CBS reply for another request");
                continue;
            }
            return check_reply(message.application_properties.as_ref());
        }
    }

    /// Detaches both links (best effort).
    pub async fn close(self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
    }
}

fn property<'a>(
    props: Option<&'a ApplicationProperties>,
    names: &[&str],
) -> Option<&'a SimpleValue> {
    let props = props?;
    names.iter().find_map(|n| props.0.get(*n))
}

/// Reads `status-code` (or `statusCode`) and `status-description` of a put-token reply.
fn check_reply(props: Option<&ApplicationProperties>) -> Result<(), Error> {
    let status = property(props, &["status-code", "statusCode"]).and_then(simple_int);
    let description = match property(props, &["status-description", "statusDescription"]) {
        Some(SimpleValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let text = |fallback: &str| {
        if description.is_empty() {
            fallback.to_owned()
        } else {
            description.clone()
        }
    };
    match status {
        Some(200 | 202) => Ok(()),
        Some(401 | 403) => Err(Error::Unauthorized {
            message: text("the hub refused the SAS token"),
            code: ErrorCode::IotHubUnauthorizedAccess,
        }),
        Some(code) => Err(Error::Hub {
            status: u16::try_from(code).ok(),
            code: None,
            condition: Some("cbs".to_owned()),
            message: text(&format!("CBS put-token failed with status {code}")),
        }),
        None => Err(Error::protocol(
            "the CBS put-token reply has no status-code",
        )),
    }
}

/// A value that is an integer of any AMQP width, as an `i64`.
pub(crate) fn simple_int(v: &SimpleValue) -> Option<i64> {
    match v {
        SimpleValue::Ubyte(n) => Some(i64::from(*n)),
        SimpleValue::Ushort(n) => Some(i64::from(*n)),
        SimpleValue::Uint(n) => Some(i64::from(*n)),
        SimpleValue::Ulong(n) => i64::try_from(*n).ok(),
        SimpleValue::Byte(n) => Some(i64::from(*n)),
        SimpleValue::Short(n) => Some(i64::from(*n)),
        SimpleValue::Int(n) => Some(i64::from(*n)),
        SimpleValue::Long(n) => Some(*n),
        SimpleValue::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, SimpleValue)]) -> ApplicationProperties {
        let mut p = ApplicationProperties::default();
        for (k, v) in pairs {
            p.0.insert((*k).to_owned(), v.clone());
        }
        p
    }

    #[test]
    fn replies_200_and_202_succeed_in_any_int_type() {
        for v in [
            SimpleValue::Int(200),
            SimpleValue::Int(202),
            SimpleValue::Uint(202),
            SimpleValue::Long(200),
        ] {
            assert!(
                check_reply(Some(&props(&[("status-code", v.clone())]))).is_ok(),
                "{v:?}"
            );
        }
        assert!(check_reply(Some(&props(&[("statusCode", SimpleValue::Int(200))]))).is_ok());
    }

    #[test]
    fn refusals_are_unauthorized_with_the_hub_text() {
        let e = check_reply(Some(&props(&[
            ("status-code", SimpleValue::Int(401)),
            ("status-description", SimpleValue::String("bad sig".into())),
        ])))
        .unwrap_err();
        assert!(matches!(&e, Error::Unauthorized { message, .. } if message == "bad sig"));
        let e = check_reply(Some(&props(&[("status-code", SimpleValue::Int(500))]))).unwrap_err();
        assert!(matches!(
            e,
            Error::Hub {
                status: Some(500),
                ..
            }
        ));
        assert!(matches!(check_reply(None), Err(Error::Protocol { .. })));
    }

    #[test]
    fn integers_of_any_width_are_read() {
        assert_eq!(simple_int(&SimpleValue::Int(202)), Some(202));
        assert_eq!(simple_int(&SimpleValue::Ulong(200)), Some(200));
        assert_eq!(simple_int(&SimpleValue::String("401".into())), Some(401));
        assert_eq!(simple_int(&SimpleValue::Bool(true)), None);
    }
}
