//! Property tests: random telemetry (single and batch, some invalid), random time steps and
//! random bounds, checked against a small model after every step.

use proptest::prelude::*;

use super::*;

const DEVICES: [&str; 5] = ["d0", "d1", "d2", "thermostat", "pump-7"];

/// One message of a generated step.
#[derive(Debug, Clone, Copy)]
enum Body {
    Small,
    /// Big enough that two do not fit in one batch.
    Big,
    /// An invalid application property name.
    Invalid,
}

#[derive(Debug, Clone)]
enum Step {
    Single { dev: usize, body: Body },
    Batch { dev: usize, bodies: Vec<Body> },
    Advance { ms: u64 },
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![8 => Just(Body::Small), 1 => Just(Body::Big), 1 => Just(Body::Invalid)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..DEVICES.len(), body()).prop_map(|(dev, body)| Step::Single { dev, body }),
        2 => (0..DEVICES.len(), prop::collection::vec(body(), 0..4))
            .prop_map(|(dev, bodies)| Step::Batch { dev, bodies }),
        2 => (0u64..3_000).prop_map(|ms| Step::Advance { ms }),
    ]
}

fn make(body: Body, id: u64) -> Message {
    let mut m = match body {
        Body::Big => Message::new(vec![b'b'; 150 * 1024]),
        _ => Message::new(format!("payload {id}")),
    };
    m.system.message_id = Some(MessageId::Ulong(id));
    if let Body::Invalid = body {
        m.properties.insert("not a name", "v");
    }
    m
}

fn id_of(e: &Event) -> u64 {
    match e.message.system.message_id {
        Some(MessageId::Ulong(id)) => id,
        _ => u64::MAX,
    }
}

fn infos(h: &Hub) -> Vec<PartitionInfo> {
    (0..h.event_log().partition_count())
        .map(|p| h.partition_info(&p.to_string()).unwrap())
        .collect()
}

/// What was appended to one partition, in order: id, enqueued ms, accounted size.
type Appends = Vec<Vec<(u64, i64, u64)>>;

/// Runs `steps`; after each, checks the step's outcome. Returns the hub, the model of what
/// each partition received, and the final time.
fn run(
    log: EventLogSettings,
    steps: &[Step],
    after_step: impl Fn(&Hub, &Appends, OffsetDateTime) -> Result<(), TestCaseError>,
) -> Result<(Hub, Appends), TestCaseError> {
    let partitions = log.partition_count;
    let mut h = hub_with(log, &DEVICES);
    let mut model: Appends = vec![Vec::new(); partitions as usize];
    let mut now = T0;
    let mut next_id = 0u64;
    for step in steps {
        let (dev, bodies, single) = match step {
            Step::Advance { ms: n } => {
                now += ms(*n);
                h.handle_timeout(now);
                after_step(&h, &model, now)?;
                continue;
            }
            Step::Single { dev, body } => (*dev, vec![*body], true),
            Step::Batch { dev, bodies } => (*dev, bodies.clone(), false),
        };
        let messages: Vec<Message> = bodies
            .iter()
            .map(|b| {
                next_id += 1;
                make(*b, next_id)
            })
            .collect();
        let total: usize = messages.iter().map(Message::size).sum();
        let ok = !bodies.iter().any(|b| matches!(b, Body::Invalid))
            && total <= iothub_protocol::message::MAX_D2C_SIZE;
        let before = infos(&h);
        let origin = Origin::device(DEVICES[dev]);
        let result = if single {
            h.send_telemetry(&origin, messages[0].clone(), now)
                .map(|a| vec![a])
        } else {
            h.send_telemetry_batch(&origin, messages.clone(), now)
        };
        prop_assert_eq!(result.is_ok(), ok, "{:?}", result);
        match result {
            Ok(placed) => {
                let p = partition_for_device(DEVICES[dev], partitions);
                for (m, a) in messages.iter().zip(&placed) {
                    prop_assert_eq!(a.partition, p);
                    let expected_seq = model[p as usize].len() as i64;
                    prop_assert_eq!(a.sequence_number, expected_seq);
                    let size = (m.size() + DEVICES[dev].len()) as u64 + EVENT_OVERHEAD;
                    model[p as usize].push((id_of_message(m), unix_ms(a.enqueued_time), size));
                }
            }
            Err(_) => prop_assert_eq!(infos(&h), before, "a refused step changes nothing"),
        }
        h.handle_timeout(now);
        after_step(&h, &model, now)?;
    }
    Ok((h, model))
}

fn id_of_message(m: &Message) -> u64 {
    match m.system.message_id {
        Some(MessageId::Ulong(id)) => id,
        _ => u64::MAX,
    }
}

fn roomy(partition_count: u32) -> EventLogSettings {
    EventLogSettings {
        partition_count,
        retention: Duration::from_secs(7 * 86_400),
        max_events_per_partition: 10_000,
        max_bytes_per_partition: 4 << 30,
        consumer_groups: Vec::new(),
    }
}

/// Where a generated reader starts, relative to the events that exist.
#[derive(Debug, Clone, Copy)]
enum Start {
    Earliest,
    Latest,
    Seq {
        k: i64,
        inclusive: bool,
    },
    OffsetOf {
        k: usize,
        inclusive: bool,
        plus_one: bool,
    },
    TimeOf {
        k: usize,
        inclusive: bool,
        delta: i64,
    },
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Earliest),
        Just(Start::Latest),
        (-2i64..40, any::<bool>()).prop_map(|(k, inclusive)| Start::Seq { k, inclusive }),
        (0usize..40, any::<bool>(), any::<bool>()).prop_map(|(k, inclusive, plus_one)| {
            Start::OffsetOf {
                k,
                inclusive,
                plus_one,
            }
        }),
        (0usize..40, any::<bool>(), -1i64..=1).prop_map(|(k, inclusive, delta)| Start::TimeOf {
            k,
            inclusive,
            delta
        }),
    ]
}

/// The position a generated start means for these retained events.
fn position_for(start: Start, retained: &[Arc<Event>], next_offset: u64) -> EventPosition {
    match start {
        Start::Earliest => EventPosition::Earliest,
        Start::Latest => EventPosition::Latest,
        Start::Seq { k, inclusive } => EventPosition::SequenceNumber {
            sequence_number: k,
            inclusive,
        },
        Start::OffsetOf {
            k,
            inclusive,
            plus_one,
        } => {
            let o = retained.get(k).map_or(next_offset, |e| e.offset) + u64::from(plus_one);
            EventPosition::Offset {
                offset: o.to_string(),
                inclusive,
            }
        }
        Start::TimeOf {
            k,
            inclusive,
            delta,
        } => EventPosition::EnqueuedTime {
            unix_ms: retained.get(k).map_or(0, |e| e.enqueued_ms()) + delta,
            inclusive,
        },
    }
}

/// The model: whether a reader starting at `p` reads `e`, by the definition of each position.
fn comes_after(p: &EventPosition, e: &Event) -> bool {
    let cmp = |inclusive: bool, a: i128, b: i128| if inclusive { a >= b } else { a > b };
    match p {
        EventPosition::Earliest => true,
        EventPosition::Latest => false,
        EventPosition::SequenceNumber {
            sequence_number,
            inclusive,
        } => cmp(
            *inclusive,
            e.sequence_number.into(),
            (*sequence_number).into(),
        ),
        EventPosition::Offset { offset, inclusive } => {
            let o: u64 = offset.parse().unwrap_or(u64::MAX);
            cmp(*inclusive, e.offset.into(), o.into())
        }
        EventPosition::EnqueuedTime { unix_ms, inclusive } => {
            cmp(*inclusive, e.enqueued_ms().into(), (*unix_ms).into())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every accepted message appears exactly once, in its device's partition, in the order
    /// accepted; sequence numbers are dense from 0; refused steps (a batch with one bad message
    /// or too big in all) change nothing.
    #[test]
    fn accepted_telemetry_appears_once_in_order(
        partitions in 1u32..=4,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let (h, model) = run(roomy(partitions), &steps, |_, _, _| Ok(()))?;
        for p in 0..partitions {
            let events = all(&h, p);
            let ids: Vec<u64> = events.iter().map(|e| id_of(e)).collect();
            let expected: Vec<u64> = model[p as usize].iter().map(|m| m.0).collect();
            prop_assert_eq!(ids, expected);
            prop_assert_eq!(seqs(&events), (0..events.len() as i64).collect::<Vec<_>>());
            for e in &events {
                prop_assert_eq!(partition_for_device(&e.origin.device_id, partitions), p);
            }
            let times: Vec<i64> = events.iter().map(|e| e.enqueued_ms()).collect();
            prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
            let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
            prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// Retention keeps exactly the newest events that are within the retention time and the
    /// count and byte bounds (always the newest one for the bounds): what is dropped is always
    /// a prefix, so a newer event never goes before an older one. One timer per partition with
    /// events, none for an empty one.
    #[test]
    fn retention_drops_the_oldest_first(
        retention_s in 1u64..20,
        max_events in 1usize..6,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let log = EventLogSettings {
            partition_count: 2,
            retention: Duration::from_secs(retention_s),
            max_events_per_partition: max_events,
            max_bytes_per_partition: 1 << 20,
            consumer_groups: Vec::new(),
        };
        let retention_ms = (retention_s * 1000) as i64;
        run(log, &steps, |h, model, now| {
            let mut with_events = 0;
            for (p, appended) in model.iter().enumerate() {
                let n = appended.len();
                let aged = appended
                    .iter()
                    .take_while(|m| m.1 + retention_ms <= unix_ms(now))
                    .count();
                let mut bounded = 0;
                while n - bounded > 1
                    && (n - bounded > max_events
                        || appended[bounded..].iter().map(|m| m.2).sum::<u64>() > 1 << 20)
                {
                    bounded += 1;
                }
                let begin = aged.max(bounded.min(n));
                let retained = all(h, p as u32);
                let expected: Vec<i64> = (begin as i64..n as i64).collect();
                prop_assert_eq!(seqs(&retained), expected);
                with_events += usize::from(!retained.is_empty());
            }
            prop_assert_eq!(h.pending_timers(), with_events);
            Ok(())
        })?;
    }

    /// A reader from any position reads exactly the retained events after it, whatever chunk
    /// sizes it reads in; positions past the end are refused.
    #[test]
    fn a_reader_sees_exactly_the_suffix(
        max_events in prop_oneof![Just(10_000usize), 3usize..20],
        steps in prop::collection::vec(step(), 1..60),
        start in start(),
        chunks in prop::collection::vec(1usize..5, 1..10),
    ) {
        let log = EventLogSettings {
            max_events_per_partition: max_events,
            ..roomy(1)
        };
        let (h, _) = run(log, &steps, |_, _, _| Ok(()))?;
        let retained = all(&h, 0);
        let p = &h.event_log.partitions[0];
        let (next_seq, next_offset) = (p.next_seq, p.next_offset);
        let position = position_for(start, &retained, next_offset);
        let refused = match &position {
            EventPosition::SequenceNumber { sequence_number: k, inclusive: true } => *k > next_seq,
            EventPosition::SequenceNumber { sequence_number: k, inclusive: false } => *k >= next_seq,
            EventPosition::Offset { offset, inclusive } => {
                let o: u64 = offset.parse().unwrap();
                if *inclusive { o > next_offset } else { o >= next_offset }
            }
            _ => false,
        };
        let cursor = h.cursor("0", &position);
        prop_assert_eq!(cursor.is_err(), refused, "{:?}", cursor);
        let Ok(mut cursor) = cursor else { return Ok(()) };
        let expected: Vec<i64> = retained
            .iter()
            .filter(|e| comes_after(&position, e))
            .map(|e| e.sequence_number)
            .collect();
        let mut got = Vec::new();
        for n in chunks.iter().cycle().take(200) {
            let batch = h.read_events(&mut cursor, *n);
            prop_assert!(batch.len() <= *n);
            if batch.is_empty() {
                break;
            }
            got.extend(seqs(&batch));
        }
        prop_assert_eq!(got, expected);
        prop_assert!(!h.has_events(&cursor));
    }
}
