//! The event vocabulary (Atlas's `EventVocabulary`): `:table` and `:sample` over the events a
//! query matches. A query alone over events passes them through whole; data words (`:sum`,
//! `:count`, `:max`, `:min`, `:by`) over events make per-step series (see `crate::events`).

use super::{Failure, Param, Word, args, take_query, take_strs};
use crate::interpreter::Context;
use crate::model::{EventExpr, Item};

type R = Result<(), Failure>;

pub(crate) static WORDS: &[Word] = &[
    Word {
        name: "table",
        params: &[Param::Query, Param::StrList],
        signature: "q:Query columns:List -- EventExpr",
        summary: "Over live events: a row per matching event with the columns' values, in \
                  order (null where the event lacks one).",
        examples: &[
            (
                "level,ERROR,:eq,(,message,)",
                Some("level,ERROR,:eq,(,message,),:table"),
            ),
            (
                "name,requests,:eq,status,500,:ge,:and,(,path,latency,)",
                Some("name,requests,:eq,status,500,:ge,:and,(,path,latency,),:table"),
            ),
            ("name,sps,:eq,(,)", None),
            ("name,sps,:eq", None),
        ],
        exec: table,
    },
    Word {
        name: "sample",
        params: &[Param::Query, Param::StrList, Param::StrList],
        signature: "q:Query sampleBy:List projection:List -- EventExpr",
        summary: "Over live events: per step and group of the sampleBy keys, the count of \
                  matching events and the projection of the step's first event as a sample.",
        examples: &[
            (
                "level,ERROR,:eq,(,fingerprint,),(,message,)",
                Some("level,ERROR,:eq,(,fingerprint,),(,message,),:sample"),
            ),
            (
                "name,sps,:eq,(,a,),(,)",
                Some("name,sps,:eq,(,a,),(,),:sample"),
            ),
            ("name,sps,:eq,(,),(,message,)", None),
        ],
        exec: sample,
    },
];

fn table(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [q, columns] = args(a)?;
    let columns = take_strs(columns)?;
    if columns.is_empty() {
        return Err(Failure::Invalid(
            ":table: the set of columns cannot be empty".into(),
        ));
    }
    ctx.stack.push(Item::Event(EventExpr::Table {
        query: take_query(q)?,
        columns,
    }));
    Ok(())
}

fn sample(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [q, by, projection] = args(a)?;
    let by = take_strs(by)?;
    if by.is_empty() {
        return Err(Failure::Invalid(":sample: sampleBy cannot be empty".into()));
    }
    ctx.stack.push(Item::Event(EventExpr::Sample {
        query: take_query(q)?,
        by,
        projection: take_strs(projection)?,
    }));
    Ok(())
}
