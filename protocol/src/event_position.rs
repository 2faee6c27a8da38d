//! Where an Event Hubs reader starts in a partition, and the selector filter strings that carry
//! that position on an AMQP receiver link.
//!
//! Reference: iothub-beyond-c2d.md 3.3. Every Event Hubs client puts the start position in the
//! source filter as a string. What the official clients send:
//!
//! | Client | Filter |
//! |---|---|
//! | Python `azure-eventhub`, JS `@azure/event-hubs`, .NET | `amqp.annotation.x-opt-offset > '-1'` (earliest), `> '@latest'`, `> '<offset>'` or `>= '<offset>'` |
//! | Python (`int` start), JS (checkpoints) | `amqp.annotation.x-opt-sequence-number > '<n>'` (or `>=`) |
//! | Python (`datetime`), JS (`enqueuedOn`) | `amqp.annotation.x-opt-enqueued-time > '<unix ms>'` (or `>=`) |
//! | the C SDK's test harness | `amqp.annotation.x-opt-enqueuedtimeutc > <unix ms>` (legacy name, value unquoted) |
//!
//! [`EventPosition::parse_selector`] reads all of these (names case-insensitive, values quoted or
//! not, any spacing) and [`EventPosition::to_selector`] writes the form the current clients use,
//! so the emulator and the Rust service client agree on the grammar.

use std::fmt;

/// The offset annotation a selector filters on.
pub const OFFSET_ANNOTATION: &str = "amqp.annotation.x-opt-offset";
/// The sequence-number annotation a selector filters on.
pub const SEQUENCE_NUMBER_ANNOTATION: &str = "amqp.annotation.x-opt-sequence-number";
/// The enqueued-time annotation a selector filters on (Unix milliseconds).
pub const ENQUEUED_TIME_ANNOTATION: &str = "amqp.annotation.x-opt-enqueued-time";
/// The older name of the enqueued-time annotation (the C SDK's test harness).
pub const LEGACY_ENQUEUED_TIME_ANNOTATION: &str = "amqp.annotation.x-opt-enqueuedtimeutc";
/// The offset value that means "from the first retained event".
pub const EARLIEST_OFFSET: &str = "-1";
/// The offset value that means "only events enqueued after the reader attached".
pub const LATEST_OFFSET: &str = "@latest";
/// Longest selector accepted; real ones are under 100 characters.
pub const MAX_SELECTOR_LEN: usize = 512;

/// Where a reader starts in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPosition {
    /// The first event the partition still holds (offset `-1`).
    Earliest,
    /// After the last event enqueued when the reader attaches (offset `@latest`).
    Latest,
    /// The event at this offset (`inclusive`) or the one after it.
    Offset {
        /// The offset as the hub wrote it in `x-opt-offset`.
        offset: String,
        /// Whether the event at `offset` itself is read.
        inclusive: bool,
    },
    /// The event with this sequence number (`inclusive`) or the one after it.
    SequenceNumber {
        /// The sequence number, as in `x-opt-sequence-number`.
        sequence_number: i64,
        /// Whether the event with this number itself is read.
        inclusive: bool,
    },
    /// The first event enqueued after (or, `inclusive`, at) this time.
    EnqueuedTime {
        /// Milliseconds since the Unix epoch, as in `x-opt-enqueued-time`.
        unix_ms: i64,
        /// Whether events enqueued at exactly `unix_ms` are read.
        inclusive: bool,
    },
}

/// A selector filter that is not one of the forms in the module docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Longer than [`MAX_SELECTOR_LEN`].
    #[error("the selector filter is {len} bytes long; at most {MAX_SELECTOR_LEN} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The annotation name is not one the hub filters on.
    #[error(
        "the selector filter names '{name}'; use amqp.annotation.x-opt-offset, x-opt-sequence-number or x-opt-enqueued-time"
    )]
    UnknownAnnotation {
        /// The name found (possibly empty).
        name: String,
    },
    /// The comparison is not `>` or `>=`.
    #[error("the selector filter compares with '{operator}'; only > and >= are supported")]
    UnsupportedOperator {
        /// The operator found (possibly empty).
        operator: String,
    },
    /// The value does not suit the annotation (not a number, empty, or an unclosed quote).
    #[error("the selector filter's value '{value}' is not valid for {annotation}: {expected}")]
    BadValue {
        /// The annotation the value was for.
        annotation: &'static str,
        /// The value found.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// Text after the value.
    #[error("the selector filter has unexpected text after its value: '{rest}'")]
    TrailingText {
        /// The extra text.
        rest: String,
    },
}

/// The annotations a selector can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Offset,
    SequenceNumber,
    EnqueuedTime,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is(OFFSET_ANNOTATION) {
            Some(Field::Offset)
        } else if is(SEQUENCE_NUMBER_ANNOTATION) {
            Some(Field::SequenceNumber)
        } else if is(ENQUEUED_TIME_ANNOTATION) || is(LEGACY_ENQUEUED_TIME_ANNOTATION) {
            Some(Field::EnqueuedTime)
        } else {
            None
        }
    }

    fn annotation(self) -> &'static str {
        match self {
            Field::Offset => OFFSET_ANNOTATION,
            Field::SequenceNumber => SEQUENCE_NUMBER_ANNOTATION,
            Field::EnqueuedTime => ENQUEUED_TIME_ANNOTATION,
        }
    }
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '>' | '<' | '=' | '!')
}

/// Splits `name op value` into its three parts; the value keeps its quotes.
fn split(s: &str) -> (&str, &str, &str) {
    let s = s.trim();
    let name_end = s
        .find(|c: char| c.is_whitespace() || is_operator_char(c))
        .unwrap_or(s.len());
    let (name, rest) = s.split_at(name_end);
    let rest = rest.trim_start();
    let op_end = rest
        .find(|c: char| !is_operator_char(c))
        .unwrap_or(rest.len());
    let (operator, value) = rest.split_at(op_end);
    (name, operator, value.trim_start())
}

/// Reads a quoted (`'...'`) or bare value; returns it and what follows.
fn read_value(field: Field, s: &str) -> Result<(&str, &str), SelectorError> {
    if let Some(quoted) = s.strip_prefix('\'') {
        return match quoted.find('\'') {
            Some(end) => Ok((&quoted[..end], &quoted[end + 1..])),
            None => Err(SelectorError::BadValue {
                annotation: field.annotation(),
                value: s.to_owned(),
                expected: "a closing quote",
            }),
        };
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Ok(s.split_at(end))
}

fn number(field: Field, value: &str, expected: &'static str) -> Result<i64, SelectorError> {
    value.parse().map_err(|_| SelectorError::BadValue {
        annotation: field.annotation(),
        value: value.to_owned(),
        expected,
    })
}

impl EventPosition {
    /// Reads a selector filter string as the Event Hubs clients send it.
    ///
    /// ```
    /// use iothub_protocol::event_position::EventPosition;
    ///
    /// let p = EventPosition::parse_selector("amqp.annotation.x-opt-sequence-number >= '42'");
    /// assert_eq!(p, Ok(EventPosition::SequenceNumber { sequence_number: 42, inclusive: true }));
    /// let p = EventPosition::parse_selector("amqp.annotation.x-opt-offset > '@latest'");
    /// assert_eq!(p, Ok(EventPosition::Latest));
    /// ```
    pub fn parse_selector(selector: &str) -> Result<EventPosition, SelectorError> {
        if selector.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong {
                len: selector.len(),
            });
        }
        let (name, operator, rest) = split(selector);
        let field = Field::from_name(name).ok_or_else(|| SelectorError::UnknownAnnotation {
            name: name.to_owned(),
        })?;
        let inclusive = match operator {
            ">" => false,
            ">=" => true,
            other => {
                return Err(SelectorError::UnsupportedOperator {
                    operator: other.to_owned(),
                });
            }
        };
        let (value, trailing) = read_value(field, rest)?;
        if !trailing.trim().is_empty() {
            return Err(SelectorError::TrailingText {
                rest: trailing.trim().to_owned(),
            });
        }
        match field {
            Field::Offset if value == EARLIEST_OFFSET => Ok(EventPosition::Earliest),
            Field::Offset if value.eq_ignore_ascii_case(LATEST_OFFSET) => Ok(EventPosition::Latest),
            Field::Offset if value.is_empty() => Err(SelectorError::BadValue {
                annotation: OFFSET_ANNOTATION,
                value: String::new(),
                expected: "an offset, '-1' or '@latest'",
            }),
            Field::Offset => Ok(EventPosition::Offset {
                offset: value.to_owned(),
                inclusive,
            }),
            Field::SequenceNumber => Ok(EventPosition::SequenceNumber {
                sequence_number: number(field, value, "a whole number")?,
                inclusive,
            }),
            Field::EnqueuedTime => Ok(EventPosition::EnqueuedTime {
                unix_ms: number(field, value, "milliseconds since the Unix epoch")?,
                inclusive,
            }),
        }
    }

    /// The selector filter string for this position, in the form the current clients send.
    ///
    /// An offset is written as given; one containing `'` cannot be read back.
    pub fn to_selector(&self) -> String {
        let op = |inclusive: bool| if inclusive { ">=" } else { ">" };
        match self {
            EventPosition::Earliest => format!("{OFFSET_ANNOTATION} > '{EARLIEST_OFFSET}'"),
            EventPosition::Latest => format!("{OFFSET_ANNOTATION} > '{LATEST_OFFSET}'"),
            EventPosition::Offset { offset, inclusive } => {
                format!("{OFFSET_ANNOTATION} {} '{offset}'", op(*inclusive))
            }
            EventPosition::SequenceNumber {
                sequence_number,
                inclusive,
            } => format!(
                "{SEQUENCE_NUMBER_ANNOTATION} {} '{sequence_number}'",
                op(*inclusive)
            ),
            EventPosition::EnqueuedTime { unix_ms, inclusive } => {
                format!("{ENQUEUED_TIME_ANNOTATION} {} '{unix_ms}'", op(*inclusive))
            }
        }
    }
}

/// The selector filter string ([`EventPosition::to_selector`]).
impl fmt::Display for EventPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_selector())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<EventPosition, SelectorError> {
        EventPosition::parse_selector(s)
    }

    #[test]
    fn reads_what_the_official_clients_send() {
        use EventPosition::*;
        assert_eq!(parse("amqp.annotation.x-opt-offset > '-1'"), Ok(Earliest));
        assert_eq!(parse("amqp.annotation.x-opt-offset >= '-1'"), Ok(Earliest));
        assert_eq!(
            parse("amqp.annotation.x-opt-offset > '@latest'"),
            Ok(Latest)
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-offset >= '550576'"),
            Ok(Offset {
                offset: "550576".into(),
                inclusive: true
            })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-sequence-number > '1379'"),
            Ok(SequenceNumber {
                sequence_number: 1379,
                inclusive: false
            })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-sequence-number > '-1'"),
            Ok(SequenceNumber {
                sequence_number: -1,
                inclusive: false
            })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-enqueued-time > '1619976150277'"),
            Ok(EnqueuedTime {
                unix_ms: 1_619_976_150_277,
                inclusive: false
            })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-enqueuedtimeutc > 1619976150277"),
            Ok(EnqueuedTime {
                unix_ms: 1_619_976_150_277,
                inclusive: false
            })
        );
    }

    #[test]
    fn names_are_case_insensitive_and_spacing_is_free() {
        assert_eq!(
            parse("  AMQP.Annotation.X-Opt-Sequence-Number>='7'  "),
            Ok(EventPosition::SequenceNumber {
                sequence_number: 7,
                inclusive: true
            })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-offset>@LATEST"),
            Ok(EventPosition::Latest)
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-offset \t>\t 12"),
            Ok(EventPosition::Offset {
                offset: "12".into(),
                inclusive: false
            })
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        assert!(matches!(
            parse("amqp.annotation.x-opt-partition-key > 'a'"),
            Err(SelectorError::UnknownAnnotation { .. })
        ));
        assert!(matches!(
            parse(""),
            Err(SelectorError::UnknownAnnotation { .. })
        ));
        for op in ["<", "=", "<=", "!=", ""] {
            assert!(
                matches!(
                    parse(&format!("amqp.annotation.x-opt-offset {op} '5'")),
                    Err(SelectorError::UnsupportedOperator { .. })
                ),
                "{op}"
            );
        }
        assert!(matches!(
            parse("amqp.annotation.x-opt-sequence-number > 'ten'"),
            Err(SelectorError::BadValue { .. })
        ));
        assert!(matches!(
            parse("amqp.annotation.x-opt-enqueued-time > '1.5'"),
            Err(SelectorError::BadValue { .. })
        ));
        assert!(matches!(
            parse("amqp.annotation.x-opt-offset > '5"),
            Err(SelectorError::BadValue { .. })
        ));
        assert!(matches!(
            parse("amqp.annotation.x-opt-offset > ''"),
            Err(SelectorError::BadValue { .. })
        ));
        assert!(matches!(
            parse("amqp.annotation.x-opt-offset > '5' OR 1=1"),
            Err(SelectorError::TrailingText { .. })
        ));
        let long = format!("amqp.annotation.x-opt-offset > '{}'", "1".repeat(600));
        assert!(matches!(parse(&long), Err(SelectorError::TooLong { .. })));
    }

    fn position() -> impl Strategy<Value = EventPosition> {
        prop_oneof![
            Just(EventPosition::Earliest),
            Just(EventPosition::Latest),
            ("[0-9]{1,18}", any::<bool>())
                .prop_map(|(offset, inclusive)| EventPosition::Offset { offset, inclusive }),
            (any::<i64>(), any::<bool>()).prop_map(|(sequence_number, inclusive)| {
                EventPosition::SequenceNumber {
                    sequence_number,
                    inclusive,
                }
            }),
            (any::<i64>(), any::<bool>()).prop_map(|(unix_ms, inclusive)| {
                EventPosition::EnqueuedTime { unix_ms, inclusive }
            }),
        ]
    }

    /// Changes the case of the name, the spacing and the quoting without changing the meaning.
    fn respell(selector: &str, upper: bool, space: &str, quoted: bool) -> String {
        let (name, op, value) = split(selector);
        let name = if upper {
            name.to_ascii_uppercase()
        } else {
            name.to_owned()
        };
        let value = if quoted {
            value.to_owned()
        } else {
            value.trim_matches('\'').to_owned()
        };
        format!("{space}{name}{space}{op}{space}{value}{space}")
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(p in position()) {
            prop_assert_eq!(parse(&p.to_selector()), Ok(p));
        }

        #[test]
        fn case_spacing_and_quotes_do_not_change_the_meaning(
            p in position(),
            upper in any::<bool>(),
            space in prop_oneof![Just(""), Just(" "), Just("  \t")],
            quoted in any::<bool>(),
        ) {
            let s = respell(&p.to_selector(), upper, space, quoted);
            prop_assert_eq!(parse(&s), Ok(p), "{}", s);
        }

        #[test]
        fn any_input_gives_a_position_or_an_error_without_panicking(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn near_misses_never_panic(
            name in prop_oneof![
                Just(OFFSET_ANNOTATION), Just(SEQUENCE_NUMBER_ANNOTATION),
                Just(ENQUEUED_TIME_ANNOTATION), Just("amqp.annotation.x")
            ],
            op in "[<>=! ]{0,3}",
            value in "['0-9a-z@é -]{0,12}",
        ) {
            let _ = parse(&format!("{name}{op}{value}"));
        }
    }
}
