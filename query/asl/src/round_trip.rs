//! Printing is the inverse of parsing: for any stack the words can build,
//! `execute(print(stack)) == stack`, and printing is canonical (a fixed point).

use argus_tsdb::CmpOp;
use proptest::prelude::*;

use crate::model::{
    AggrOp, AggregateFunction, DataExpr, DataKind, Item, Query, RegexQuery, TimeSeriesExpr,
    print_stack,
};
use crate::run as execute;

fn check(program: &str, canonical: &str) {
    let stack = execute(program).unwrap_or_else(|e| panic!("{program}: {e}"));
    let printed = print_stack(&stack);
    assert_eq!(printed, canonical, "printing {program}");
    let again = execute(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
    assert_eq!(again, stack, "re-parsing {printed}");
}

#[test]
fn expressions_print_canonically() {
    let same = [
        "name,sys.cpu.utilization,:eq,:sum,(,nf.app,),:by",
        "name,http.requests,:eq,:sum,(,nf.app,status,),:by",
        "name,http.latency,:eq,nf.cluster,app00[0-3].*,:re,:and,method,GET,:eq,:and,:sum,(,nf.cluster,),:by",
        "name,http.latency,:eq,:max",
        "name,(,http.requests,http.latency,),:in,:count",
        "a,b,:eq,:not,c,:has,:or,d,e,:lt,:and,:all",
        "a,\\u002c(,:eq,:avg",
        "k,x\\u003ay,:reic,:min",
        "a,b,:eq,:sum,c,d,:eq,:max,(,),:by",
        "(,a,(,b,:dup,),),\\u0028,\\u0020x\\u0009y",
    ];
    for p in same {
        check(p, p);
    }
    check(" name , a , :eq , /* c */ :sum ", "name,a,:eq,:sum");
    check("a,b,:contains", "a,.*b,:re");
    check("a,(,x,),:in", "a,x,:eq");
    check(":true,a,b,:eq,:and,:true,:or", ":true");
    check("x,:freeze,y", "x,y");
    check("a/*x*/b,c", "ab,c");
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9._-]{0,8}",
        "[ -~]{1,6}",
        "[,:() /*\\\\u0-9a-f\t\n]{1,6}",
        "\\PC{1,4}",
    ]
}

fn leaf() -> impl Strategy<Value = Query> {
    prop_oneof![
        Just(Query::True),
        Just(Query::False),
        (text(), text()).prop_map(|(key, value)| Query::Equal { key, value }),
        (text(), prop::collection::vec(text(), 2..4))
            .prop_map(|(key, values)| Query::In { key, values }),
        text().prop_map(|key| Query::HasKey { key }),
        (text(), text(), 0..4usize).prop_map(|(key, value, op)| Query::Cmp {
            key,
            op: [CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge][op],
            value,
        }),
        (text(), text(), any::<bool>()).prop_map(|(key, lit, ic)| {
            let pattern = format!("{}.*", regex::escape(&lit));
            Query::Regex(RegexQuery::new(key, pattern, ic).expect("escaped literal compiles"))
        }),
    ]
}

/// Queries built the way the words build them (with Atlas's simplifications).
fn query() -> impl Strategy<Value = Query> {
    leaf().prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
            inner.prop_map(Query::not),
        ]
    })
}

fn item() -> impl Strategy<Value = Item> {
    let op = prop_oneof![
        Just(AggrOp::Sum),
        Just(AggrOp::Count),
        Just(AggrOp::Min),
        Just(AggrOp::Max),
        Just(AggrOp::Avg),
    ];
    prop_oneof![
        query().prop_map(Item::Query),
        (query(), op.clone()).prop_map(|(query, op)| Item::Expr(TimeSeriesExpr::Data(
            DataExpr::aggregate(op, query)
        ))),
        (query(), op, prop::collection::vec(text(), 0..3)).prop_map(|(query, op, keys)| {
            Item::Expr(TimeSeriesExpr::Data(DataExpr::new(DataKind::GroupBy {
                af: AggregateFunction { op, query },
                keys,
            })))
        }),
        query().prop_map(|q| Item::Expr(TimeSeriesExpr::Data(DataExpr::new(DataKind::All(q))))),
        text().prop_map(Item::Str),
        prop::collection::vec(text().prop_map(Item::Str), 0..3).prop_map(Item::List),
    ]
}

/// Programs that build expressions of every vocabulary, the way users write them. Some are
/// refused (e.g. incompatible grouping); those that run must print back to themselves.
fn keys() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("nf.app")], 0..3).prop_map(|ks| {
        format!(
            "(,{}{}),",
            ks.join(","),
            if ks.is_empty() { "" } else { "," }
        )
    })
}

fn data_program() -> impl Strategy<Value = String> {
    (
        query(),
        prop_oneof![
            Just(":sum"),
            Just(":count"),
            Just(":min"),
            Just(":max"),
            Just(":avg")
        ],
        prop::option::of(keys()),
        prop::option::of(prop_oneof![Just(",1h,:offset"), Just(",PT5M,:offset")]),
        prop::option::of(prop_oneof![Just(",:cf-max"), Just(",:cf-sum")]),
    )
        .prop_map(|(q, op, by, offset, cf)| {
            let mut p = format!("{q},{op}");
            if let Some(k) = by {
                p.push_str(&format!(",{k}:by"));
            }
            p.push_str(cf.unwrap_or(""));
            p.push_str(offset.unwrap_or(""));
            p
        })
}

fn expr_program() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => data_program(),
        1 => prop_oneof![
            Just("42".to_string()),
            Just("-1.5e-7,:const".to_string()),
            Just(":random".to_string()),
            Just("7,:srandom".to_string()),
            Just("hourOfDay,:time".to_string()),
            Just("e-1h,ge,:time-span".to_string()),
            Just(":pi".to_string()),
        ],
        1 => query().prop_map(|q| format!("{q},(,25,50,),:percentiles")),
        1 => query().prop_map(|q| format!("{q},:dist-avg")),
        1 => (query(), keys()).prop_map(|(q, k)| format!("{q},{k}:by,:median")),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        let unary = prop_oneof![
            Just(":abs"),
            Just(":neg"),
            Just(":sqrt"),
            Just(":per-step"),
            Just(":cos"),
            Just("5,:clamp-min"),
            Just("0.5,:clamp-max"),
            Just(":sum"),
            Just(":count"),
            Just(":max"),
            Just(":avg"),
            Just(":stddev"),
            Just(":pct"),
            Just("3,:delay"),
            Just("4,2,:rolling-mean"),
            Just("5,:rolling-max"),
            Just("10m,:trend"),
            Just(":integral"),
            Just(":derivative"),
            Just(":cumulative-max"),
            Just(":des-fast"),
            Just("5,0.1,0.2,:sdes"),
            Just("max,:stat"),
            Just(":stat-max,5,:gt,:filter"),
            Just("avg,2,:topk"),
            Just("max,3,:bottomk-others-avg"),
            Just("a,b,:as"),
            Just("1d,:offset"),
            Just(":cf-min"),
        ];
        prop_oneof![
            (inner.clone(), unary).prop_map(|(e, u)| format!("{e},{u}")),
            (inner.clone(), keys()).prop_map(|(e, k)| format!("{e},{k}:by")),
            (inner.clone(), keys()).prop_map(|(e, k)| format!("{e},{k}:cg")),
            (
                inner.clone(),
                inner,
                prop_oneof![
                    Just(":add"),
                    Just(":sub"),
                    Just(":div"),
                    Just(":fmul"),
                    Just(":gt"),
                    Just(":and"),
                    Just(":pow")
                ]
            )
                .prop_map(|(a, b, op)| format!("{a},{b},{op}")),
        ]
    })
}

fn styled_program() -> impl Strategy<Value = String> {
    let style = prop_oneof![
        Just(",$nf.app,:legend"),
        Just(",f00,:color"),
        Just(",40,:alpha"),
        Just(",reds,:palette"),
        Just(",1,:axis"),
        Just(",:stack"),
        Just(",2,:lw"),
        Just(",max,:sort,desc,:order"),
        Just(",3,:limit"),
        Just(",hex,:decode"),
        Just(",^a(.*),b$1,:s"),
        Just(",(,1h,1w,),:offset"),
    ];
    (expr_program(), prop::collection::vec(style, 0..4))
        .prop_map(|(e, s)| format!("{e}{}", s.concat()))
}

/// Most generated programs must run, or the property above tests little.
#[test]
fn generated_programs_mostly_run() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = styled_program();
    let (mut ok, n) = (0, 500);
    for _ in 0..n {
        let program = strategy.new_tree(&mut runner).expect("tree").current();
        if execute(&program).is_ok() {
            ok += 1;
        }
    }
    assert!(ok * 10 >= n * 7, "only {ok} of {n} generated programs ran");
}

proptest! {
    #[test]
    fn every_vocabulary_prints_back(programs in prop::collection::vec(styled_program(), 1..3)) {
        let program = programs.join(",");
        let Ok(stack) = execute(&program) else {
            return Ok(());
        };
        let printed = print_stack(&stack);
        let parsed = execute(&printed);
        prop_assert!(parsed.is_ok(), "{program} printed as {printed}: {:?}", parsed.err());
        let parsed = parsed.unwrap_or_default();
        // Compared through Debug, which is structural but lets a NaN constant (folded from
        // e.g. a negative `:sqrt`) equal itself.
        prop_assert_eq!(format!("{parsed:?}"), format!("{stack:?}"), "{} printed as {}", program, printed);
        prop_assert_eq!(print_stack(&parsed), printed);
    }

    #[test]
    fn print_then_parse_is_identity(stack in prop::collection::vec(item(), 0..4)) {
        let printed = print_stack(&stack);
        let parsed = execute(&printed);
        prop_assert!(parsed.is_ok(), "{printed}: {:?}", parsed.err());
        let parsed = parsed.unwrap_or_default();
        prop_assert_eq!(&parsed, &stack, "printed as {}", printed);
        prop_assert_eq!(print_stack(&parsed), printed);
    }
}
