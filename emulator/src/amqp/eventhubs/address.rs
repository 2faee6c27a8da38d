//! The Event Hubs nodes, as each client spells them (iothub-beyond-c2d.md 3.3, 3.7).
//!
//! JS attaches to `{eh}/ConsumerGroups/{group}/Partitions/{id}` and `{eh}/$management`, Python
//! to `amqps://{host}/{eh}/ConsumerGroups/...` (even without TLS) and `$management`. Samples
//! that start from an IoT Hub connection string attach to `messages/events/...` on the hub
//! host and expect a redirect. So any `scheme://host[:port]` prefix is dropped and the literal
//! segments compare case-insensitively; the consumer group keeps its spelling (the hub matches
//! it) and the partition id stays text (the hub refuses ids it did not write).

use percent_encoding::percent_decode_str;

/// An Event Hubs node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EhNode {
    /// A partition of a consumer group of the event hub `entity`.
    Partition {
        /// The event hub name in the address (the hub name, if the client is right).
        entity: String,
        /// The consumer group, as spelled.
        consumer_group: String,
        /// The partition id, as spelled.
        partition_id: String,
    },
    /// `$management` or `{eh}/$management`: entity and partition information.
    Management,
    /// `messages/events/...` on the IoT Hub host: answered with `amqp:link:redirect`. Holds
    /// the path after `messages/events` (e.g. `ConsumerGroups/$Default/Partitions/0`).
    Redirect(String),
}

/// The Event Hubs node an address names, or `None` for any other address.
pub fn parse(address: &str) -> Option<EhNode> {
    let segments = segments(address);
    let is = |i: usize, lit: &str| segments.get(i).is_some_and(|s| s.eq_ignore_ascii_case(lit));
    let decoded = |i: usize| -> Option<String> {
        let raw = segments.get(i)?;
        Some(percent_decode_str(raw).decode_utf8().ok()?.into_owned())
    };
    if is(0, "messages") && is(1, "events") {
        return Some(EhNode::Redirect(segments[2..].join("/")));
    }
    match segments.len() {
        1 if is(0, "$management") => Some(EhNode::Management),
        2 if is(1, "$management") => Some(EhNode::Management),
        5 if is(1, "ConsumerGroups") && is(3, "Partitions") => Some(EhNode::Partition {
            entity: decoded(0)?,
            consumer_group: decoded(2)?,
            partition_id: decoded(4)?,
        }),
        _ => None,
    }
}

/// The path segments of an address, without scheme, host and empty segments.
fn segments(address: &str) -> Vec<&str> {
    let mut path = address.trim();
    if let Some(i) = path.find("://") {
        let rest = &path[i + 3..];
        path = rest.find('/').map_or("", |j| &rest[j..]);
    }
    path.split('/').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(entity: &str, group: &str, id: &str) -> Option<EhNode> {
        Some(EhNode::Partition {
            entity: entity.into(),
            consumer_group: group.into(),
            partition_id: id.into(),
        })
    }

    #[test]
    fn every_client_spelling_of_a_partition_matches() {
        assert_eq!(
            parse("myhub/ConsumerGroups/$Default/Partitions/0"),
            partition("myhub", "$Default", "0")
        );
        assert_eq!(
            parse("amqps://localhost/myhub/consumergroups/$default/partitions/3"),
            partition("myhub", "$default", "3")
        );
        assert_eq!(
            parse("amqp://localhost:5672/myhub/ConsumerGroups/cg%201/Partitions/1"),
            partition("myhub", "cg 1", "1")
        );
    }

    #[test]
    fn management_and_redirect_nodes() {
        assert_eq!(parse("$management"), Some(EhNode::Management));
        assert_eq!(parse("myhub/$management"), Some(EhNode::Management));
        assert_eq!(
            parse("amqps://h/messages/events/ConsumerGroups/$Default/Partitions/0"),
            Some(EhNode::Redirect(
                "ConsumerGroups/$Default/Partitions/0".into()
            ))
        );
        assert_eq!(
            parse("amqps://h/messages/events/$management"),
            Some(EhNode::Redirect("$management".into()))
        );
    }

    #[test]
    fn iot_hub_nodes_are_not_event_hubs_nodes() {
        for a in [
            "$cbs",
            "/messages/devicebound",
            "/devices/d/messages/events",
            "/messages/serviceBound/feedback",
            "myhub/ConsumerGroups/$Default",
            "myhub/ConsumerGroups/$Default/Partitions/0/extra",
            "",
        ] {
            assert_eq!(parse(a), None, "{a}");
        }
    }
}
