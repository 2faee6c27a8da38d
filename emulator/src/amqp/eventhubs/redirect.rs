//! `amqp:link:redirect` for Event Hubs clients that start from an IoT Hub connection string
//! (iothub-beyond-c2d.md 3.7).
//!
//! They attach a receiver to `messages/events/...` on the hub host and read the Event
//! Hubs-compatible host and name from the redirect's `info`: `hostname`, `network-host`,
//! `port` and `address` = `amqps://{host}:{port}/{name}/{same suffix}`. Both sample regexes
//! need the `:port/` in the address. The emulator serves the Event Hubs surface on its own AMQP
//! listener, so the redirect points back at this host and port with the hub name as the event
//! hub name, and the hub certificate covers it.

use fe2o3_amqp::Sender;
use fe2o3_amqp_types::definitions::{Error, Fields, LinkError};
use fe2o3_amqp_types::primitives::{Symbol, Value};

use crate::amqp::connection::Conn;
use crate::amqp::inbound::DETACH_TIMEOUT;

/// The redirect error for a receiver on `messages/events/{suffix}`.
pub fn redirect_error(host: &str, port: u16, hub_name: &str, suffix: &str) -> Error {
    let address = if suffix.is_empty() {
        format!("amqps://{host}:{port}/{hub_name}")
    } else {
        format!("amqps://{host}:{port}/{hub_name}/{suffix}")
    };
    let mut info = Fields::new();
    info.insert(Symbol::from("hostname"), Value::String(host.to_owned()));
    info.insert(Symbol::from("network-host"), Value::String(host.to_owned()));
    info.insert(Symbol::from("port"), Value::Int(i32::from(port)));
    info.insert(Symbol::from("address"), Value::String(address));
    Error::new(
        LinkError::Redirect,
        Some(
            "The IoT hub's built-in endpoint is served as an Event Hub: reconnect to the address in this error's info.".to_owned(),
        ),
        Some(info),
    )
}

/// How long the redirect waits after the attach answer went out.
///
/// The Event Hubs samples (rhea-promise) listen for the receiver's error only once
/// `createReceiver` has resolved on the attach. A real hub's detach follows a network round
/// trip later; here both frames can leave in one write (the AMQP writer batches), rhea then
/// emits the error in the same tick as the open, before the sample listens, and the sample
/// waits forever. A pause puts the detach in a read of its own.
const REDIRECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Detaches the receiver with the redirect.
pub async fn serve(conn: &Conn, sender: Sender, suffix: &str) {
    tokio::select! {
        _ = conn.cancel.cancelled() => return,
        _ = tokio::time::sleep(REDIRECT_PAUSE) => {}
    }
    let error = redirect_error(
        &conn.ctx.host_name,
        conn.ctx.info.endpoints.amqp,
        &conn.ctx.hub_name,
        suffix,
    );
    let _ = tokio::time::timeout(DETACH_TIMEOUT, sender.close_with_error(error)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::ErrorCondition;

    #[test]
    fn the_address_has_the_port_both_samples_need() {
        let e = redirect_error(
            "localhost",
            5671,
            "myhub",
            "ConsumerGroups/$Default/Partitions/0",
        );
        assert_eq!(e.condition, ErrorCondition::LinkError(LinkError::Redirect));
        let info = e.info.unwrap();
        assert_eq!(
            info.get(&Symbol::from("address")),
            Some(&Value::String(
                "amqps://localhost:5671/myhub/ConsumerGroups/$Default/Partitions/0".into()
            ))
        );
        assert_eq!(info.get(&Symbol::from("port")), Some(&Value::Int(5671)));
    }
}
