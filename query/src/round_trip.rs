//! Printing is the inverse of parsing: for any stack the words can build,
//! `execute(print(stack)) == stack`, and printing is canonical (a fixed point).

use argus_tsdb::CmpOp;
use proptest::prelude::*;

use crate::interpreter::execute;
use crate::model::{
    AggrOp, AggregateFunction, DataExpr, Item, Query, RegexQuery, TimeSeriesExpr, print_stack,
};

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
            DataExpr::Aggregate(AggregateFunction { op, query })
        ))),
        (query(), op, prop::collection::vec(text(), 0..3)).prop_map(|(query, op, keys)| {
            Item::Expr(TimeSeriesExpr::Data(DataExpr::GroupBy {
                af: AggregateFunction { op, query },
                keys,
            }))
        }),
        query().prop_map(|q| Item::Expr(TimeSeriesExpr::Data(DataExpr::All(q)))),
        text().prop_map(Item::Str),
        prop::collection::vec(text().prop_map(Item::Str), 0..3).prop_map(Item::List),
    ]
}

proptest! {
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
