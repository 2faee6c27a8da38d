//! Receiver links on `{eh}/ConsumerGroups/{group}/Partitions/{id}` (iothub-beyond-c2d.md 3.3).
//!
//! The start position comes from the source's selector filter, matched by the filter string and
//! not by its descriptor (each client uses another one); the owner level from the
//! `com.microsoft:epoch` link property. The hub admits the reader and says where it starts;
//! from then on events go out only against the peer's credit (JS attaches with none and grants
//! it as its queue drains), pre-settled, because Event Hubs readers keep their checkpoints
//! themselves. An idle reader waits on its partition's wake-up, never polling. A reader that
//! a higher owner level displaces is detached with `amqp:link:stolen`.

use std::collections::VecDeque;
use std::sync::Arc;

use fe2o3_amqp::Sender;
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp_types::definitions::{AmqpError, Error, ErrorCondition, LinkError};
use fe2o3_amqp_types::messaging::Source;
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Symbol, Value};
use iothub_protocol::EventPosition;

use super::message::event_message;
use crate::amqp::connection::Conn;
use crate::amqp::errors::{ARGUMENT_ERROR, error_for};
use crate::amqp::inbound::DETACH_TIMEOUT;
use crate::amqp::tokens::Access;
use crate::hub::EventLogError;
use crate::hub::event_log::{Event, ReaderRequest};

/// The filter-set key (and, for Python and the C harness, the descriptor) of the selector.
pub const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
/// The link property that carries an owner level.
pub const EPOCH: &str = "com.microsoft:epoch";
/// `com.microsoft:argument-out-of-range`: a partition id the hub did not write.
pub const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
/// Events read from the hub per lock of it; they go out as credit allows.
const READ_BATCH: usize = 256;

/// What a partition receiver's attach asks for, read before the link is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRequest {
    /// The event hub name in the address.
    pub entity: String,
    /// The hub's view of the request; `position` is `Err` when the filter could not be read.
    pub consumer_group: String,
    /// The partition id.
    pub partition_id: String,
    /// The start position, or why the filter was refused.
    pub position: Result<EventPosition, EventLogError>,
    /// `com.microsoft:epoch`.
    pub owner_level: Option<i64>,
}

/// The selector filter's string, if the source has one: the entry keyed
/// [`SELECTOR_FILTER`], or else any string entry that names an `amqp.annotation.` field.
pub fn selector(source: Option<&Source>) -> Option<String> {
    let filter = source?.filter.as_ref()?;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Described(d) => match &d.value {
                Value::String(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    };
    let keyed = filter
        .iter()
        .find(|(k, _)| k.as_str().eq_ignore_ascii_case(SELECTOR_FILTER))
        .and_then(|(_, v)| text(v));
    keyed.or_else(|| {
        filter.iter().find_map(|(_, v)| {
            text(v).filter(|s| {
                s.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("amqp.annotation.")
            })
        })
    })
}

/// The owner level of an attach: `com.microsoft:epoch` as any integer type.
pub fn owner_level(attach: &Attach) -> Option<i64> {
    let v = attach.properties.as_ref()?.get(&Symbol::from(EPOCH))?;
    match v {
        Value::Long(n) => Some(*n),
        Value::Int(n) => Some(i64::from(*n)),
        Value::Uint(n) => Some(i64::from(*n)),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// The request an attach makes, with the position parsed (Earliest when there is no filter).
pub fn request(
    attach: &Attach,
    entity: String,
    consumer_group: String,
    partition_id: String,
) -> PartitionRequest {
    let position = match selector(attach.source.as_deref()) {
        Some(s) => EventPosition::parse_selector(&s).map_err(EventLogError::from),
        None => Ok(EventPosition::Earliest),
    };
    PartitionRequest {
        entity,
        consumer_group,
        partition_id,
        position,
        owner_level: owner_level(attach),
    }
}

/// The AMQP error the Event Hubs clients expect for an event log error.
pub fn error_for_log(e: &EventLogError) -> Error {
    let condition: ErrorCondition = match e {
        EventLogError::ConsumerGroupNotFound { .. } => AmqpError::NotFound.into(),
        EventLogError::PartitionNotFound { .. } => {
            ErrorCondition::Custom(Symbol::from(ARGUMENT_OUT_OF_RANGE))
        }
        EventLogError::SequenceNumberBeyondEnd { .. }
        | EventLogError::OffsetBeyondEnd { .. }
        | EventLogError::InvalidOffset { .. }
        | EventLogError::InvalidSelector(_) => ErrorCondition::Custom(Symbol::from(ARGUMENT_ERROR)),
        EventLogError::OwnerLevelConflict { .. } | EventLogError::ReaderDisplaced => {
            LinkError::Stolen.into()
        }
        EventLogError::TooManyReaders { .. } => AmqpError::ResourceLimitExceeded.into(),
    };
    Error::new(condition, e.to_string(), None)
}

/// The error for an address naming an event hub this hub is not.
fn entity_not_found(entity: &str, hub_name: &str) -> Error {
    let shown: String = entity.chars().take(64).collect();
    Error::new(
        AmqpError::NotFound,
        format!(
            "The messaging entity '{shown}' could not be found. This hub's Event Hubs-compatible name is '{hub_name}'."
        ),
        None,
    )
}

async fn close(sender: Sender, error: Option<Error>) {
    let close = async move {
        match error {
            Some(e) => sender.close_with_error(e).await,
            None => sender.close().await,
        }
    };
    let _ = tokio::time::timeout(DETACH_TIMEOUT, close).await;
}

enum Step {
    Shutdown,
    Displaced,
    Tick,
    Woken,
    Gone,
    Sent(bool),
}

/// Sends `pending` from the front, each event as soon as the link has credit, taking each off
/// once fe2o3 has it: a batch costs one pass through the caller's `select!` instead of one per
/// event. Cancelled (a tick, a shutdown) it leaves the unsent ones in place.
async fn send_all(sender: &mut Sender, pending: &mut VecDeque<Arc<Event>>) -> Step {
    while let Some(event) = pending.front() {
        let sendable = Sendable::builder()
            .message(event_message(event))
            .settled(true)
            .build();
        if sender.send_batchable(sendable).await.is_err() {
            return Step::Sent(false);
        }
        pending.pop_front();
    }
    Step::Sent(true)
}

/// Serves one partition receiver until the link ends.
pub async fn serve(conn: Arc<Conn>, mut sender: Sender, request: PartitionRequest) {
    let path = format!(
        "{}/ConsumerGroups/{}/Partitions/{}",
        request.entity, request.consumer_group, request.partition_id
    );
    let mut auth = match conn
        .tokens
        .authorize_link(&conn.ctx, Access::EventHub(path))
    {
        Ok(a) => a,
        Err(e) => return close(sender, Some(error_for(&e))).await,
    };
    if !request.entity.eq_ignore_ascii_case(&conn.ctx.hub_name) {
        let e = entity_not_found(&request.entity, &conn.ctx.hub_name);
        return close(sender, Some(e)).await;
    }
    let position = match request.position {
        Ok(p) => p,
        Err(e) => return close(sender, Some(error_for_log(&e))).await,
    };
    let hub_request = ReaderRequest {
        consumer_group: request.consumer_group,
        partition_id: request.partition_id,
        position,
        owner_level: request.owner_level,
    };
    let hub = conn.ctx.hub.clone();
    let mut reader = match hub.attach_reader(&hub_request) {
        Ok(r) => r,
        Err(e) => return close(sender, Some(error_for_log(&e))).await,
    };
    let displaced = reader.displaced().clone();
    let partition = reader.cursor().partition();
    let mut pending: VecDeque<Arc<Event>> = VecDeque::new();
    let ending = loop {
        let Some(notify) = hub.events_notify(partition) else {
            break None;
        };
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if pending.is_empty() {
            pending.extend(reader.read(READ_BATCH));
        }
        if let Err(e) = auth.check() {
            break Some(error_for(&e));
        }
        let idle = pending.is_empty();
        let link_op = async {
            if idle {
                sender.on_detach().await;
                Step::Gone
            } else {
                send_all(&mut sender, &mut pending).await
            }
        };
        let step = tokio::select! {
            _ = conn.cancel.cancelled() => Step::Shutdown,
            _ = displaced.cancelled() => Step::Displaced,
            _ = auth.tick() => Step::Tick,
            _ = &mut woken, if idle => Step::Woken,
            s = link_op => s,
        };
        match step {
            Step::Shutdown => break None,
            Step::Displaced => break Some(error_for_log(&EventLogError::ReaderDisplaced)),
            Step::Tick | Step::Woken | Step::Sent(true) => {}
            Step::Gone | Step::Sent(false) => return,
        }
    };
    drop(reader);
    close(sender, ending).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::OrderedMap;
    use serde_amqp::described::Described;
    use serde_amqp::descriptor::Descriptor;

    fn source(key: &str, descriptor: Descriptor, filter: &str) -> Source {
        let mut set = OrderedMap::new();
        set.insert(
            Symbol::from(key),
            Value::Described(Box::new(Described {
                descriptor,
                value: Value::String(filter.into()),
            })),
        );
        Source::builder().address("x").filter(set).build()
    }

    #[test]
    fn the_selector_is_found_whatever_the_descriptor() {
        let f = "amqp.annotation.x-opt-offset > '-1'";
        let js = source(SELECTOR_FILTER, Descriptor::Code(0x0000_468C_0000_0004), f);
        let py = source(
            SELECTOR_FILTER,
            Descriptor::Name(Symbol::from(SELECTOR_FILTER)),
            f,
        );
        let other_key = source("my-filter", Descriptor::Code(0x137_0000_000A), f);
        for s in [js, py, other_key] {
            assert_eq!(selector(Some(&s)).as_deref(), Some(f));
        }
        let unrelated = source("x", Descriptor::Code(1), "color = 'red'");
        assert_eq!(selector(Some(&unrelated)), None);
        assert_eq!(selector(None), None);
    }

    #[test]
    fn event_log_errors_map_to_the_conditions_clients_expect() {
        let cond = |e: EventLogError| error_for_log(&e).condition;
        assert_eq!(
            cond(EventLogError::ReaderDisplaced),
            ErrorCondition::LinkError(LinkError::Stolen)
        );
        assert_eq!(
            cond(EventLogError::PartitionNotFound {
                partition: "9".into(),
                last: 3
            }),
            ErrorCondition::Custom(Symbol::from(ARGUMENT_OUT_OF_RANGE))
        );
        assert_eq!(
            cond(EventLogError::ConsumerGroupNotFound {
                name: "x".into(),
                entity: "h/ConsumerGroups/x".into(),
                known: "$Default".into()
            }),
            ErrorCondition::AmqpError(AmqpError::NotFound)
        );
    }
}
