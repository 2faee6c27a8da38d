//! Query tests: the documented queries on a small hub, paging, errors, parse/print round trips
//! and evaluation against a naive model over the twins' JSON.

use crate::hub::twin::obj;
use iothub_protocol::ErrorCode;
use iothub_protocol::query::QueryItemType;
use iothub_protocol::registry::{Device, DeviceStatus};
use iothub_protocol::twin::{JsonObject, TwinWrite};
use proptest::prelude::*;
use serde_json::{Number, Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::ast::is_keyword;
use super::lexer::{is_ident_char, is_ident_start};
use super::*;
use crate::hub::{Hub, HubSettings, Identity};

const T0: OffsetDateTime = datetime!(2026-03-01 0:00 UTC);

/// d0..d4 with tags, desired and reported properties; d3 disabled, d1 connected, d4 an edge
/// device.
fn sample_hub() -> Hub {
    let mut hub = Hub::new(HubSettings::default(), 5);
    for i in 0..5 {
        let mut d = Device::new(format!("d{i}"));
        d.capabilities.iot_edge = i == 4;
        if i == 3 {
            d.status = DeviceStatus::Disabled;
        }
        hub.create_device(d, T0).unwrap();
        let id = Identity::device(format!("d{i}"));
        let region = if i % 2 == 0 { "US" } else { "EU" };
        hub.update_twin(
            &id,
            &TwinWrite::tags(obj(json!({"location": {"region": region}, "n": i}))),
            None,
            T0,
        )
        .unwrap();
        if i < 3 {
            hub.update_reported_properties(
                &id,
                &obj(json!({"connectivity": if i == 0 { "wired" } else { "wifi" }, "battery": 20 * i})),
                T0,
            )
            .unwrap();
        }
    }
    hub.update_twin(
        &Identity::device("d2"),
        &TwinWrite::desired(obj(json!({"fw": "2.0"}))),
        None,
        T0,
    )
    .unwrap();
    hub.set_connection_state("d1", true, T0);
    hub
}

fn ids(hub: &Hub, q: &str) -> Vec<String> {
    let page = hub.query_twins(q, 1000, None).unwrap();
    assert_eq!(page.continuation_token, None);
    page.items
        .iter()
        .map(|t| t["deviceId"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn where_clauses_select_the_right_twins() {
    let hub = sample_hub();
    for (q, want) in [
        ("SELECT * FROM devices", vec!["d0", "d1", "d2", "d3", "d4"]),
        (
            "SELECT * FROM devices WHERE tags.location.region = 'US'",
            vec!["d0", "d2", "d4"],
        ),
        (
            "select * from DEVICES where TAGS.location.region = \"US\" and tags.n > 0",
            vec!["d2", "d4"],
        ),
        (
            "SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'cellular']",
            vec!["d0"],
        ),
        (
            "SELECT * FROM devices WHERE properties.reported.connectivity NIN ['wired']",
            vec!["d1", "d2"],
        ),
        (
            "SELECT * FROM devices WHERE tags.n NOT IN [0, 1]",
            vec!["d2", "d3", "d4"],
        ),
        (
            "SELECT * FROM devices WHERE IS_DEFINED(properties.reported.battery)",
            vec!["d0", "d1", "d2"],
        ),
        (
            "SELECT * FROM devices WHERE NOT is_defined(properties.reported.battery)",
            vec!["d3", "d4"],
        ),
        // Undefined is neither equal nor unequal.
        (
            "SELECT * FROM devices WHERE properties.reported.connectivity != 'wired'",
            vec!["d1", "d2"],
        ),
        (
            "SELECT * FROM devices WHERE NOT (properties.reported.connectivity = 'wired')",
            vec!["d1", "d2"],
        ),
        (
            "SELECT * FROM devices WHERE properties.reported.battery >= 20 OR deviceId = 'd4'",
            vec!["d1", "d2", "d4"],
        ),
        (
            "SELECT * FROM devices WHERE status = 'disabled'",
            vec!["d3"],
        ),
        (
            "SELECT * FROM devices WHERE connectionState = 'Connected'",
            vec!["d1"],
        ),
        (
            "SELECT * FROM devices WHERE capabilities.iotEdge = true",
            vec!["d4"],
        ),
        (
            "SELECT * FROM devices WHERE properties.desired.$version > 1",
            vec!["d2"],
        ),
        (
            "SELECT * FROM devices WHERE properties.desired.fw = '2.0'",
            vec!["d2"],
        ),
        (
            "SELECT * FROM devices WHERE version >= 4",
            vec!["d0", "d1", "d2"],
        ),
        (
            "SELECT * FROM devices WHERE DeviceId <> 'd0' AND tags.n < 3",
            vec!["d1", "d2"],
        ),
        // Tag keys are case-sensitive; types must match.
        (
            "SELECT * FROM devices WHERE tags.Location.region = 'US'",
            vec![],
        ),
        ("SELECT * FROM devices WHERE tags.n = '1'", vec![]),
        ("SELECT * FROM devices WHERE tags.location > 'A'", vec![]),
        (
            "SELECT * FROM devices WHERE 'US' = tags.location.region AND (tags.n = 0 OR tags.n = 4)",
            vec!["d0", "d4"],
        ),
    ] {
        assert_eq!(ids(&hub, q), want, "{q}");
    }
}

#[test]
fn select_star_returns_service_view_twins() {
    let hub = sample_hub();
    let page = hub
        .query_twins("SELECT * FROM devices WHERE deviceId = 'd2'", 100, None)
        .unwrap();
    assert_eq!(page.item_type, QueryItemType::Twin);
    let want = serde_json::to_value(hub.get_twin(&Identity::device("d2")).unwrap()).unwrap();
    assert_eq!(page.items, [want]);
}

#[test]
fn projections_and_aggregates_are_raw() {
    let hub = sample_hub();
    let page = hub
        .query_twins(
            "SELECT deviceId, tags.location.region AS r, properties.reported.battery FROM devices WHERE tags.n <= 3",
            100,
            None,
        )
        .unwrap();
    assert_eq!(page.item_type, QueryItemType::Raw);
    assert_eq!(
        page.items[0],
        json!({"deviceId": "d0", "r": "US", "battery": 0})
    );
    assert_eq!(
        page.items[3],
        json!({"deviceId": "d3", "r": "EU"}),
        "undefined fields are left out"
    );

    let page = hub
        .query_twins("SELECT COUNT() AS numberOfDevices FROM devices", 100, None)
        .unwrap();
    assert_eq!(page.item_type, QueryItemType::Raw);
    assert_eq!(page.items, [json!({"numberOfDevices": 5})]);
    let page = hub
        .query_twins("SELECT COUNT() FROM devices WHERE tags.n > 10", 100, None)
        .unwrap();
    assert_eq!(page.items, [json!({"$1": 0})]);

    let page = hub
        .query_twins(
            "SELECT properties.reported.connectivity AS c, COUNT() AS n FROM devices GROUP BY properties.reported.connectivity",
            100,
            None,
        )
        .unwrap();
    assert_eq!(
        page.items,
        [
            json!({"c": "wired", "n": 1}),
            json!({"c": "wifi", "n": 2}),
            json!({"n": 2})
        ]
    );
    let page = hub
        .query_twins(
            "SELECT tags.location.region, COUNT() AS n FROM devices GROUP BY tags.location.region",
            1,
            None,
        )
        .unwrap();
    assert_eq!(page.items, [json!({"region": "US", "n": 3})]);
    let next = hub
        .query_twins(
            "SELECT tags.location.region, COUNT() AS n FROM devices GROUP BY tags.location.region",
            1,
            page.continuation_token.as_deref(),
        )
        .unwrap();
    assert_eq!(next.items, [json!({"region": "EU", "n": 2})]);
    assert_eq!(next.continuation_token, None);
}

#[test]
fn modules_collection_is_empty_until_modules_exist() {
    let hub = sample_hub();
    let page = hub
        .query_twins(
            "SELECT * FROM devices.modules WHERE moduleId = 'm1'",
            100,
            None,
        )
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.continuation_token, None);
    let page = hub
        .query_twins("SELECT COUNT() AS n FROM devices.modules", 100, None)
        .unwrap();
    assert_eq!(page.items, [json!({"n": 0})]);
}

#[test]
fn paging_follows_the_token_and_ends_without_one() {
    let hub = sample_hub();
    let q = "SELECT deviceId FROM devices WHERE tags.n != 2";
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = hub.query_twins(q, 2, token.as_deref()).unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|i| i["deviceId"].clone()));
        match page.continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 2, "the last full page knows nothing follows");
    assert_eq!(seen, [json!("d0"), json!("d1"), json!("d3"), json!("d4")]);
}

#[test]
fn bad_tokens_and_queries_are_argument_invalid() {
    let hub = sample_hub();
    let q = "SELECT * FROM devices";
    let token = hub
        .query_twins(q, 1, None)
        .unwrap()
        .continuation_token
        .unwrap();
    let e = hub
        .query_twins("SELECT deviceId FROM devices", 1, Some(&token))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
    assert!(e.to_string().contains("continuation token"));
    for bad in ["garbage!", "eyJ4Ijp9"] {
        assert!(hub.query_twins(q, 1, Some(bad)).is_err());
    }
    // An empty header is no token.
    assert_eq!(hub.query_twins(q, 1, Some("")).unwrap().items.len(), 1);

    let e = hub
        .query_twins("SELECT * FROM devices ORDER BY deviceId", 100, None)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ArgumentInvalid);
    assert_eq!(
        e.to_string(),
        "The query uses a part the emulator does not support: ORDER BY is not supported; results come in device id order (at character 23)"
    );
    let e = hub.query_twins("SELECT * FROM", 100, None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("The query is invalid: expected devices")
    );
    let long = format!(
        "SELECT * FROM devices WHERE deviceId IN [{}]",
        "'x', ".repeat(60_000)
    );
    assert!(
        hub.query_twins(&long, 100, None)
            .unwrap_err()
            .to_string()
            .contains("at most")
    );
}

#[test]
fn ten_thousand_twins_page_through_once() {
    let mut hub = Hub::new(HubSettings::default(), 9);
    for i in 0..10_000 {
        hub.create_device(Device::new(format!("dev{i:05}")), T0)
            .unwrap();
        if i % 7 == 0 {
            hub.update_twin(
                &Identity::device(format!("dev{i:05}")),
                &TwinWrite::tags(obj(json!({"group": "seven"}))),
                None,
                T0,
            )
            .unwrap();
        }
    }
    let q = "SELECT * FROM devices WHERE tags.group = 'seven'";
    let mut token: Option<String> = None;
    let mut total = 0;
    let mut last = String::new();
    loop {
        let page = hub.query_twins(q, 100, token.as_deref()).unwrap();
        for t in &page.items {
            let id = t["deviceId"].as_str().unwrap().to_owned();
            assert!(id > last, "ascending, no repeats");
            last = id;
        }
        total += page.items.len();
        match page.continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(total, 10_000usize.div_ceil(7));
}

// ---- property tests ----

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_$][a-zA-Z0-9_$]{0,5}".prop_filter("not a keyword", |s| !is_keyword(s))
}

fn path() -> impl Strategy<Value = Path> {
    (
        ident(),
        prop::collection::vec("[a-zA-Z_][a-zA-Z0-9_]{0,4}", 0..3),
    )
        .prop_map(|(first, rest)| {
            let mut v = vec![first];
            v.extend(rest);
            Path(v)
        })
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<String>().prop_map(Literal::String),
        any::<i64>().prop_map(|n| Literal::Number(n.into())),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Literal::Number),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Null),
    ]
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Gt,
        CmpOp::Le,
        CmpOp::Ge,
    ])
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        path().prop_map(Operand::Path),
        literal().prop_map(Operand::Literal)
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        (operand(), cmp_op(), operand()).prop_map(|(l, o, r)| Expr::Compare(l, o, r)),
        (
            operand(),
            prop::collection::vec(literal(), 0..4),
            any::<bool>()
        )
            .prop_map(|(operand, list, negated)| Expr::In {
                operand,
                list,
                negated
            }),
        path().prop_map(Expr::IsDefined),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

fn query() -> impl Strategy<Value = Query> {
    let columns = prop::collection::vec(
        (path(), prop::option::of(ident())).prop_map(|(p, alias)| Column {
            value: ColumnValue::Path(p),
            alias,
        }),
        1..4,
    )
    .prop_filter("distinct names", |cols| {
        let mut names: Vec<&str> = cols.iter().map(super::parser::output_name).collect();
        names.sort_unstable();
        names.windows(2).all(|w| w[0] != w[1])
    });
    let select = prop_oneof![Just(Select::All), columns.prop_map(Select::Columns)];
    let from = prop::sample::select(vec![Collection::Devices, Collection::Modules]);
    (select, from, prop::option::of(expr())).prop_map(|(select, from, filter)| Query {
        select,
        from,
        filter,
        group_by: None,
    })
}

fn grouped_query() -> impl Strategy<Value = Query> {
    (
        path(),
        prop::option::of(ident()),
        ident(),
        prop::option::of(expr()),
    )
        .prop_filter("distinct names", |(p, a, n, _)| {
            a.as_deref().unwrap_or(p.last()) != n
        })
        .prop_map(|(p, alias, count, filter)| Query {
            select: Select::Columns(vec![
                Column {
                    value: ColumnValue::Path(p.clone()),
                    alias,
                },
                Column {
                    value: ColumnValue::Count,
                    alias: Some(count),
                },
            ]),
            from: Collection::Devices,
            filter,
            group_by: Some(p),
        })
}

/// Twins for the evaluation model: a few tag and reported shapes.
fn twin_spec() -> impl Strategy<Value = (JsonObject, JsonObject)> {
    let value = prop_oneof![
        (-3i64..3).prop_map(|n| json!(n)),
        prop::sample::select(vec!["a", "b", "B"]).prop_map(|s| json!(s)),
        any::<bool>().prop_map(Value::Bool),
        Just(json!({"x": 1})),
        Just(json!([1, 2])),
    ];
    let section =
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), value, 0..3)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<JsonObject>()
            });
    (section.clone(), section)
}

/// Paths the evaluation model uses (exact case: the model walks JSON case-sensitively).
fn model_path() -> impl Strategy<Value = Path> {
    prop::sample::select(vec![
        "tags.a",
        "tags.b",
        "tags.c.x",
        "properties.reported.a",
        "properties.reported.b",
        "properties.reported.c",
        "deviceId",
        "status",
        "tags.missing",
    ])
    .prop_map(|s| Path(s.split('.').map(str::to_owned).collect()))
}

fn model_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        (-3i64..3).prop_map(|n| Literal::Number(n.into())),
        prop::sample::select(vec!["a", "b", "B", "t1", "enabled"])
            .prop_map(|s| Literal::String(s.into())),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Null),
    ]
}

fn model_expr() -> impl Strategy<Value = Expr> {
    let operand = prop_oneof![
        3 => model_path().prop_map(Operand::Path),
        1 => model_literal().prop_map(Operand::Literal),
    ];
    let leaf = prop_oneof![
        (
            operand.clone(),
            cmp_op(),
            model_literal().prop_map(Operand::Literal)
        )
            .prop_map(|(l, o, r)| Expr::Compare(l, o, r)),
        (
            operand,
            prop::collection::vec(model_literal(), 0..3),
            any::<bool>()
        )
            .prop_map(|(operand, list, negated)| Expr::In {
                operand,
                list,
                negated
            }),
        model_path().prop_map(Expr::IsDefined),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

/// The model: the same semantics, written over the twin's full JSON.
fn model_eval(e: &Expr, twin: &Value) -> Option<bool> {
    let get = |p: &Path| {
        let mut v = twin;
        for s in &p.0 {
            v = v.as_object()?.get(s)?;
        }
        Some(v.clone())
    };
    let operand = |o: &Operand| match o {
        Operand::Path(p) => get(p),
        Operand::Literal(Literal::String(s)) => Some(json!(s)),
        Operand::Literal(Literal::Number(n)) => Some(Value::Number(n.clone())),
        Operand::Literal(Literal::Bool(b)) => Some(json!(b)),
        Operand::Literal(Literal::Null) => Some(Value::Null),
    };
    let cmp = |l: &Value, op: CmpOp, r: &Value| -> Option<bool> {
        let ord = match (l, r) {
            (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?)?,
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                return Some((a == b) == (op == CmpOp::Eq));
            }
            (Value::Null, Value::Null) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                return Some(op == CmpOp::Eq);
            }
            _ => return None,
        };
        use std::cmp::Ordering::*;
        Some(match op {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Gt => ord == Greater,
            CmpOp::Le => ord != Greater,
            CmpOp::Ge => ord != Less,
        })
    };
    match e {
        Expr::And(items) => {
            let r: Vec<_> = items.iter().map(|i| model_eval(i, twin)).collect();
            if r.contains(&Some(false)) {
                Some(false)
            } else if r.iter().all(|x| *x == Some(true)) {
                Some(true)
            } else {
                None
            }
        }
        Expr::Or(items) => {
            let r: Vec<_> = items.iter().map(|i| model_eval(i, twin)).collect();
            if r.contains(&Some(true)) {
                Some(true)
            } else if r.iter().all(|x| *x == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        Expr::Not(i) => model_eval(i, twin).map(|b| !b),
        Expr::Compare(l, op, r) => cmp(&operand(l)?, *op, &operand(r)?),
        Expr::In {
            operand: o,
            list,
            negated,
        } => {
            let v = operand(o)?;
            if v.is_object() || v.is_array() {
                return None;
            }
            let found = list.iter().any(|l| {
                cmp(
                    &v,
                    CmpOp::Eq,
                    &operand(&Operand::Literal(l.clone())).unwrap_or_default(),
                ) == Some(true)
            });
            Some(found != *negated)
        }
        Expr::IsDefined(p) => Some(get(p).is_some()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn printed_queries_parse_back(q in prop_oneof![query(), grouped_query()]) {
        let text = q.to_string();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
        prop_assert_eq!(back, q, "{}", text);
    }

    #[test]
    fn parsing_never_panics(text in "(SELECT|FROM|WHERE|devices|[a-z.]{1,3}|[()\\[\\],*=<>!'\" ]|AND|OR|NOT|IN|-?[0-9.e]{1,3}){0,24}") {
        let _ = parse(&text);
    }

    #[test]
    fn evaluation_matches_the_model(
        twins in prop::collection::vec(twin_spec(), 1..8),
        e in model_expr(),
        page in 1usize..4,
    ) {
        let mut hub = Hub::new(HubSettings::default(), 3);
        for (i, (tags, reported)) in twins.iter().enumerate() {
            let id = Identity::device(format!("t{i}"));
            hub.create_device(Device::new(id.device_id.clone()), T0).unwrap();
            hub.update_twin(&id, &TwinWrite::tags(tags.clone()), None, T0).unwrap();
            hub.update_reported_properties(&id, reported, T0).unwrap();
        }
        let mut want = Vec::new();
        for i in 0..twins.len() {
            let t = serde_json::to_value(hub.get_twin(&Identity::device(format!("t{i}"))).unwrap()).unwrap();
            if model_eval(&e, &t) == Some(true) {
                want.push(json!({"deviceId": format!("t{i}")}));
            }
        }
        let text = format!("SELECT deviceId FROM devices WHERE {e}");
        let mut got = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let p = hub.query_twins(&text, page, token.as_deref()).unwrap();
            prop_assert!(p.items.len() <= page);
            got.extend(p.items);
            match p.continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        prop_assert_eq!(&got, &want, "{}", text);

        let count = hub.query_twins(&format!("SELECT COUNT() AS n FROM devices WHERE {e}"), 10, None).unwrap();
        prop_assert_eq!(count.items, vec![json!({"n": want.len()})]);
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_ident_start) && chars.all(is_ident_char)
}

#[test]
fn generated_identifiers_print_as_identifiers() {
    assert!(is_identifier("$version"));
    assert!(!is_identifier("9a"));
    assert!(!is_identifier("a-b"));
}
