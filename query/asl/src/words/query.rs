//! The query vocabulary: predicates over tags (`:eq`, `:re`, `:in`, `:and`, ...). All
//! key-value queries are false for series that lack the key; `:not` is true for them.

use argus_tsdb::CmpOp;

use super::{Failure, Param, Word, args, take_query, take_str, take_strs};
use crate::interpreter::{Context, MAX_QUERY_DEPTH};
use crate::model::{Item, Query, RegexQuery};

type R = Result<(), Failure>;

const KV: &[Param] = &[Param::Str, Param::Str];
const KV_SIG: &str = "k:String v:String -- Query";
const QQ: &[Param] = &[Param::Query, Param::Query];

pub(crate) static WORDS: &[Word] = &[
    Word {
        name: "true",
        params: &[],
        signature: " -- Query",
        summary: "Query that matches every series.",
        examples: &[("", Some(":true"))],
        exec: |ctx, _| push(ctx, Query::True),
    },
    Word {
        name: "false",
        params: &[],
        signature: " -- Query",
        summary: "Query that matches no series.",
        examples: &[("", Some(":false"))],
        exec: |ctx, _| push(ctx, Query::False),
    },
    Word {
        name: "has",
        params: &[Param::Str],
        signature: "k:String -- Query",
        summary: "Query that matches series that have the key.",
        examples: &[("a", Some("a,:has")), ("", None)],
        exec: has,
    },
    Word {
        name: "eq",
        params: KV,
        signature: KV_SIG,
        summary: "Query that matches series whose value for the key equals the given value.",
        examples: &[
            ("a,b", Some("a,b,:eq")),
            ("nf.node,i-003e", Some("nf.node,i-003e,:eq")),
            ("a\\u002cb,c d", Some("a\\u002cb,c d,:eq")),
            ("name", None),
        ],
        exec: eq,
    },
    Word {
        name: "lt",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value sorts before the given value (string order: 100 < 2).",
        examples: &[("status,400", Some("status,400,:lt")), ("name", None)],
        exec: |ctx, a| cmp(ctx, a, CmpOp::Lt),
    },
    Word {
        name: "le",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value sorts before or equals the given value (string order).",
        examples: &[("status,400", Some("status,400,:le")), ("name", None)],
        exec: |ctx, a| cmp(ctx, a, CmpOp::Le),
    },
    Word {
        name: "gt",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value sorts after the given value (string order: 2 > 100).",
        examples: &[("status,400", Some("status,400,:gt")), ("name", None)],
        exec: |ctx, a| cmp(ctx, a, CmpOp::Gt),
    },
    Word {
        name: "ge",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value sorts after or equals the given value (string order).",
        examples: &[("status,400", Some("status,400,:ge")), ("name", None)],
        exec: |ctx, a| cmp(ctx, a, CmpOp::Ge),
    },
    Word {
        name: "re",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value matches the regex, anchored at the start. Give it a \
                  literal prefix: the index scans only the values that start with it.",
        examples: &[
            (
                "name,DiscoveryStatus_(UP|DOWN)",
                Some("name,DiscoveryStatus_(UP|DOWN),:re"),
            ),
            (
                "nf.cluster,app00[0-3].*",
                Some("nf.cluster,app00[0-3].*,:re"),
            ),
            ("name,a(b", None),
            ("name", None),
        ],
        exec: |ctx, a| regex(ctx, a, false),
    },
    Word {
        name: "reic",
        params: KV,
        signature: KV_SIG,
        summary: "Query: like `:re` but case-insensitive; always scans every value of the key.",
        examples: &[
            (
                "name,discoverystatus_(up|down)",
                Some("name,discoverystatus_(up|down),:reic"),
            ),
            ("name,[", None),
            ("name", None),
        ],
        exec: |ctx, a| regex(ctx, a, true),
    },
    Word {
        name: "contains",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value contains the string (written as an anchored `:re`).",
        examples: &[
            ("name,foo.bar", Some("name,.*foo\\.bar,:re")),
            ("name", None),
        ],
        exec: |ctx, a| literal(ctx, a, ".*", ""),
    },
    Word {
        name: "starts",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value starts with the string (written as an anchored `:re`).",
        examples: &[("name,foo.", Some("name,foo\\.,:re")), ("name", None)],
        exec: |ctx, a| literal(ctx, a, "", ""),
    },
    Word {
        name: "ends",
        params: KV,
        signature: KV_SIG,
        summary: "Query: the key's value ends with the string (written as an anchored `:re`).",
        examples: &[("name,.bar", Some("name,.*\\.bar$,:re")), ("name", None)],
        exec: |ctx, a| literal(ctx, a, ".*", "$"),
    },
    Word {
        name: "in",
        params: &[Param::Str, Param::StrList],
        signature: "k:String vs:List -- Query",
        summary: "Query that matches series whose value for the key is one of the given values.",
        examples: &[
            ("name,(,sps,)", Some("name,sps,:eq")),
            (
                "name,(,requestsPerSecond,sps,)",
                Some("name,(,requestsPerSecond,sps,),:in"),
            ),
            ("name,(,)", Some(":false")),
            ("name,sps", None),
        ],
        exec: in_,
    },
    Word {
        name: "and",
        params: QQ,
        signature: "Query Query -- Query",
        summary: "Query that matches series both queries match.",
        examples: &[
            (":false,:true", Some(":false")),
            (":true,a,b,:eq", Some("a,b,:eq")),
            ("a,b,:eq,c,d,:eq", Some("a,b,:eq,c,d,:eq,:and")),
            ("a,b", None),
        ],
        exec: and,
    },
    Word {
        name: "or",
        params: QQ,
        signature: "Query Query -- Query",
        summary: "Query that matches series either query matches.",
        examples: &[
            (":false,a,b,:eq", Some("a,b,:eq")),
            (":true,a,b,:eq", Some(":true")),
            ("a,b,:eq,c,d,:eq", Some("a,b,:eq,c,d,:eq,:or")),
            ("a,b,:eq", None),
        ],
        exec: or,
    },
    Word {
        name: "not",
        params: &[Param::Query],
        signature: "Query -- Query",
        summary: "Query that matches series the query does not match, including series that \
                  lack the query's keys.",
        examples: &[
            (":true", Some(":false")),
            ("a,b,:eq", Some("a,b,:eq,:not")),
            ("a", None),
        ],
        exec: not,
    },
    Word {
        name: "cq",
        params: &[Param::Any, Param::Query],
        signature: "expr q:Query -- expr",
        summary: "Common query: AND q into every query inside the item below it (a query, an                   expression or a styled expression); other items are left as they are.",
        examples: &[
            (
                "name,sps,:eq,:sum,(,nf.app,),:by,nf.region,us-east-1,:eq",
                Some("name,sps,:eq,nf.region,us-east-1,:eq,:and,:sum,(,nf.app,),:by"),
            ),
            ("a,b,:eq,c,d,:eq", Some("a,b,:eq,c,d,:eq,:and")),
            ("foo,c,d,:eq", Some("foo")),
            (
                "name,test,:eq,:avg,1h,:offset,app,foo,:eq",
                Some("name,test,:eq,app,foo,:eq,:and,:avg,1h,:offset"),
            ),
        ],
        exec: common_query,
    },
];

fn common_query(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [item, q] = args(a)?;
    let q = take_query(q)?;
    let out = match item {
        Item::Query(base) => Item::Query(base.and(q)),
        Item::Expr(mut e) => {
            e.add_query(&q);
            Item::Expr(e)
        }
        Item::Style(mut s) => {
            s.expr.add_query(&q);
            Item::Style(s)
        }
        other => other,
    };
    if let Item::Query(q) = &out
        && q.depth() > MAX_QUERY_DEPTH
    {
        return Err(Failure::TooComplex(format!(
            "queries nested more than {MAX_QUERY_DEPTH} deep"
        )));
    }
    ctx.stack.push(out);
    Ok(())
}

fn push(ctx: &mut Context<'_>, q: Query) -> R {
    if q.depth() > MAX_QUERY_DEPTH {
        return Err(Failure::TooComplex(format!(
            "queries nested more than {MAX_QUERY_DEPTH} deep"
        )));
    }
    ctx.stack.push(Item::Query(q));
    Ok(())
}

fn key_value(a: Vec<Item>) -> Result<(String, String), Failure> {
    let [k, v] = args(a)?;
    Ok((take_str(k)?, take_str(v)?))
}

fn has(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [k] = args(a)?;
    push(ctx, Query::HasKey { key: take_str(k)? })
}

fn eq(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let (key, value) = key_value(a)?;
    push(ctx, Query::Equal { key, value })
}

fn cmp(ctx: &mut Context<'_>, a: Vec<Item>, op: CmpOp) -> R {
    let (key, value) = key_value(a)?;
    push(ctx, Query::Cmp { key, op, value })
}

fn build_regex(key: String, pattern: String, ignore_case: bool) -> Result<Query, Failure> {
    RegexQuery::new(key, pattern.clone(), ignore_case)
        .map(Query::Regex)
        .map_err(|reason| Failure::BadRegex { pattern, reason })
}

fn regex(ctx: &mut Context<'_>, a: Vec<Item>, ignore_case: bool) -> R {
    let (key, pattern) = key_value(a)?;
    let q = build_regex(key, pattern, ignore_case)?;
    push(ctx, q)
}

/// `:contains`, `:starts`, `:ends`: the literal, escaped, between a regex prefix and suffix.
fn literal(ctx: &mut Context<'_>, a: Vec<Item>, before: &str, after: &str) -> R {
    let (key, s) = key_value(a)?;
    let pattern = format!("{before}{}{after}", regex::escape(&s));
    let q = build_regex(key, pattern, false)?;
    push(ctx, q)
}

fn in_(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [k, vs] = args(a)?;
    let key = take_str(k)?;
    let mut values = take_strs(vs)?;
    let q = match values.len() {
        0 => Query::False,
        1 => Query::Equal {
            key,
            value: values.remove(0),
        },
        _ => Query::In { key, values },
    };
    push(ctx, q)
}

fn and(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x, y] = args(a)?;
    push(ctx, take_query(x)?.and(take_query(y)?))
}

fn or(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x, y] = args(a)?;
    push(ctx, take_query(x)?.or(take_query(y)?))
}

fn not(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x] = args(a)?;
    push(ctx, take_query(x)?.not())
}
