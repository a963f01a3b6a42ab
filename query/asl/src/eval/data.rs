//! Data expressions against a [`SeriesSource`]. Aggregation streams each series' values
//! straight into per-group accumulator arrays: groups are found once per series from its
//! tags, and no allocation happens per series or per point.

use ahash::AHashMap;
use argus_tsdb::{Postings, ReadRequest, SeriesId, SeriesSource, TagMap, Tags};

use super::{EvalContext, Label, Line};
use crate::error::Result;
use crate::model::{AggrOp, AggregateFunction, DataExpr, DataKind, Query};

/// Evaluates a data expression; with an offset, reads that much earlier and lays the values
/// on the request's grid. It is [`eval_partial`] over the whole source, finished by
/// [`merge`]: the one path a cluster splits across nodes.
pub(crate) fn eval_data(
    expr: &DataExpr,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
) -> Result<Vec<Line>> {
    if let Some(fanout) = &ctx.fanout {
        // In a cluster the nodes holding the series evaluate their parts.
        let parts = fanout
            .partials(&expr.to_string(), ctx.start_ms, ctx.end_ms, ctx.step_ms)
            .map_err(crate::error::Error::Evaluation)?;
        return merge(expr, ctx, parts);
    }
    let part = eval_partial(expr, ctx, src)?;
    merge(expr, ctx, vec![part])
}

/// The store read a data expression makes: the window, shifted by its offset.
fn read_request(expr: &DataExpr, ctx: &EvalContext) -> Result<ReadRequest> {
    let shift = expr.offset_ms.div_euclid(ctx.step_ms) * ctx.step_ms;
    let shifted = |t: i64| {
        t.checked_sub(shift)
            .ok_or_else(|| crate::error::Error::InvalidParam {
                name: "q",
                value: format!("{}ms,:offset", expr.offset_ms),
                reason: "the offset moves the window out of the representable time range".into(),
            })
    };
    Ok(ReadRequest {
        start_ms: shifted(ctx.start_ms)?,
        end_ms: shifted(ctx.end_ms)?,
        step_ms: ctx.step_ms,
        cf: expr.consolidation(),
    })
}

/// What one part of the series (one node's partitions, in a cluster) contributes to a data
/// expression: Atlas's split. An aggregate is its accumulators per group (sums and counts,
/// or running extremes), which add up in any order; `:all` is its lines. Parts of the same
/// expression over the same window [`merge`] into its lines.
pub struct Partial(PartialKind);

enum PartialKind {
    /// Per group, its `:by` key string (`k=v k2=v2 `, empty for a plain aggregate) and key
    /// values; the accumulator holds the groups in that order.
    Groups {
        groups: Vec<(String, Vec<String>)>,
        acc: Accumulator,
    },
    /// `:all`: every series with data in the window.
    Lines(Vec<(TagMap, Vec<f64>)>),
}

/// A borrowed view of a [`Partial`], for its encoding.
pub enum PartialParts<'a> {
    Groups {
        /// The aggregate: 0 sum, 1 count, 2 min, 3 max, 4 avg.
        op: u8,
        len: usize,
        groups: &'a [(String, Vec<String>)],
        values: &'a [f64],
        counts: &'a [u32],
    },
    Lines(&'a [(TagMap, Vec<f64>)]),
}

const OPS: [AggrOp; 5] = [
    AggrOp::Sum,
    AggrOp::Count,
    AggrOp::Min,
    AggrOp::Max,
    AggrOp::Avg,
];

impl Partial {
    pub fn parts(&self) -> PartialParts<'_> {
        match &self.0 {
            PartialKind::Groups { groups, acc } => PartialParts::Groups {
                op: OPS.iter().position(|&o| o == acc.op).unwrap_or(0) as u8,
                len: acc.len,
                groups,
                values: &acc.values,
                counts: &acc.counts,
            },
            PartialKind::Lines(lines) => PartialParts::Lines(lines),
        }
    }

    /// Groups with their accumulators, checked: `values` and `counts` must be as long as
    /// the aggregate keeps for that many groups.
    pub fn from_groups(
        op: u8,
        len: usize,
        groups: Vec<(String, Vec<String>)>,
        values: Vec<f64>,
        counts: Vec<u32>,
    ) -> std::result::Result<Partial, String> {
        let op = *OPS
            .get(op as usize)
            .ok_or_else(|| format!("unknown aggregate {op}"))?;
        let mut acc = Accumulator::new(op, 0, len);
        let cells = groups
            .len()
            .checked_mul(len)
            .ok_or("too many groups and steps")?;
        let (want_values, want_counts) = match op {
            AggrOp::Sum | AggrOp::Avg => (cells, cells),
            AggrOp::Count => (0, cells),
            AggrOp::Min | AggrOp::Max => (cells, 0),
        };
        if values.len() != want_values || counts.len() != want_counts {
            return Err(format!(
                "{} groups of {len} steps of {} need {want_values} values and {want_counts} \
                 counts, not {} and {}",
                groups.len(),
                op.word(),
                values.len(),
                counts.len()
            ));
        }
        (acc.values, acc.counts) = (values, counts);
        Ok(Partial(PartialKind::Groups { groups, acc }))
    }

    pub fn from_lines(lines: Vec<(TagMap, Vec<f64>)>) -> Partial {
        Partial(PartialKind::Lines(lines))
    }

    /// The lines of a part made of lines (`None` for an aggregate's groups).
    pub fn into_lines(self) -> Option<Vec<(TagMap, Vec<f64>)>> {
        match self.0 {
            PartialKind::Lines(lines) => Some(lines),
            PartialKind::Groups { .. } => None,
        }
    }
}

/// Evaluates a data expression over `src` up to the point where parts merge.
pub(crate) fn eval_partial(
    expr: &DataExpr,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
) -> Result<Partial> {
    let req = read_request(expr, ctx)?;
    let ids = src.select(&expr.query().to_matcher());
    Ok(Partial(match &expr.kind {
        DataKind::Aggregate(af) => PartialKind::Groups {
            groups: vec![(String::new(), Vec::new())],
            acc: aggregate(af, &ids, ctx, &req, src)?,
        },
        DataKind::GroupBy { af, keys } => group_by(af, keys, &ids, ctx, &req, src)?,
        DataKind::All(_) => PartialKind::Lines(all(&ids, ctx, &req, src)?),
    }))
}

/// The lines of a data expression from its parts (over the same window), as one evaluation
/// over all their series would give them: counts, extremes and integer sums exactly; other
/// sums added in another order.
pub(crate) fn merge(expr: &DataExpr, ctx: &EvalContext, parts: Vec<Partial>) -> Result<Vec<Line>> {
    let len = read_request(expr, ctx)?.len();
    // Parts from elsewhere must be of this expression and window.
    for part in &parts {
        let fits = match (&part.0, &expr.kind) {
            (PartialKind::Lines(lines), DataKind::All(_)) => {
                lines.iter().all(|(_, v)| v.len() == len)
            }
            (
                PartialKind::Groups { acc, .. },
                DataKind::Aggregate(af) | DataKind::GroupBy { af, .. },
            ) => acc.op == af.op && acc.len == len,
            _ => false,
        };
        if !fits {
            return Err(crate::error::Error::Evaluation(format!(
                "a part of {expr} does not fit it (another aggregate or window)"
            )));
        }
    }
    let mut parts = parts.into_iter().map(|p| p.0);
    match &expr.kind {
        DataKind::All(_) => {
            let mut lines = Vec::new();
            for part in parts {
                if let PartialKind::Lines(mut l) = part {
                    lines.append(&mut l);
                }
            }
            ctx.check_lines(lines.len(), len)?;
            let mut out: Vec<Line> = lines
                .into_iter()
                .map(|(tags, values)| Line {
                    tags,
                    label: Label::FromTags,
                    values,
                })
                .collect();
            out.sort_by(|a, b| a.tags.cmp(&b.tags));
            Ok(out)
        }
        DataKind::Aggregate(af) | DataKind::GroupBy { af, .. } => {
            let (mut groups, mut acc) = (Vec::new(), Accumulator::new(af.op, 0, len));
            let mut index: AHashMap<String, usize> = AHashMap::new();
            for part in parts.by_ref() {
                let PartialKind::Groups {
                    groups: their_groups,
                    acc: theirs,
                } = part
                else {
                    continue;
                };
                if groups.is_empty() {
                    // The first part is taken as it is: one node's answer costs no copy.
                    index = their_groups
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (k.clone(), i))
                        .collect();
                    (groups, acc) = (their_groups, theirs);
                    continue;
                }
                for (g, (key, values)) in their_groups.into_iter().enumerate() {
                    let mine = match index.get(&key) {
                        Some(&i) => i,
                        None => {
                            let i = groups.len();
                            index.insert(key.clone(), i);
                            groups.push((key, values));
                            acc.push_group();
                            i
                        }
                    };
                    acc.merge_group(mine, &theirs, g);
                }
            }
            if let DataKind::Aggregate(af) = &expr.kind {
                return Ok(vec![
                    match (!groups.is_empty()).then(|| acc.finish(0)).flatten() {
                        Some(values) => Line {
                            tags: aggregate_tags(&af.query),
                            label: Label::FromTags,
                            values,
                        },
                        None => no_data(Some(&af.query), len),
                    },
                ]);
            }
            ctx.check_lines(groups.len(), len)?;
            finish_groups(af, expr.grouping(), &groups, &acc)
        }
    }
}
/// Series per worker below which a scan stays on the calling thread: spawning costs tens of
/// microseconds, scanning a thousand series about a hundred.
const PARALLEL_MIN_SERIES: u64 = 1_024;
/// Most threads one query scans with.
const MAX_SCAN_THREADS: usize = 4;

/// Streams the values of `ids` into accumulators, on several threads when there are many
/// series: each thread takes a part of the ids that the store says can be read without
/// contention (whole shards), with its own accumulator, and the accumulators are merged.
/// Each thread's read buffers and accumulator (`acc_bytes`) are charged to the budget first.
fn scan_parallel(
    ids: &Postings,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
    req: &ReadRequest,
    acc_bytes: usize,
    make: impl Fn() -> Accumulator + Sync,
    add: impl Fn(&mut Accumulator, SeriesId, &[f64]) + Sync,
) -> Result<Accumulator> {
    let threads = scan_threads(ids.len());
    ctx.memory
        .charge(threads.saturating_mul(read_bytes(req, src).saturating_add(acc_bytes)))?;
    if threads <= 1 {
        let mut acc = make();
        if !ids.is_empty() {
            src.visit_values(ids, req, &mut |id, values| add(&mut acc, id, values))?;
        }
        return Ok(acc);
    }
    let parts = src.partition(ids, threads);
    let results = argus_tsdb::scan_parts(&parts, |part| -> Result<Accumulator> {
        let mut acc = make();
        src.visit_values(part, req, &mut |id, values| add(&mut acc, id, values))?;
        Ok(acc)
    });
    let mut merged: Option<Accumulator> = None;
    for r in results {
        let acc = joined(r)?;
        match merged.as_mut() {
            None => merged = Some(acc),
            Some(m) => m.merge(&acc),
        }
    }
    Ok(merged.unwrap_or_else(make))
}

/// Threads a scan of `series` series takes: one per [`PARALLEL_MIN_SERIES`], at most one
/// per core and [`MAX_SCAN_THREADS`].
fn scan_threads(series: u64) -> usize {
    let most = argus_tsdb::scan_cores().min(MAX_SCAN_THREADS);
    (series / PARALLEL_MIN_SERIES).clamp(1, most as u64) as usize
}

/// Groups per thread from which a `:by` scan splits its groups between the threads
/// instead of its series.
const MIN_GROUPS_PER_THREAD: usize = 64;

/// A `:by` scan with many groups: each thread takes a contiguous range of groups, with
/// about as many series as the others, and adds into its own share of one accumulator.
/// Splitting the series instead gives every thread an accumulator for all groups, merged
/// afterwards: for q4 of the peer benchmark (2,000 groups of 180 steps) 4.3 MB of fresh
/// pages more, and the merge.
fn scan_group_ranges(
    op: AggrOp,
    n_groups: usize,
    members: &[(SeriesId, u32)],
    threads: usize,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
    req: &ReadRequest,
) -> Result<Accumulator> {
    let len = req.len();
    ctx.memory.charge(
        threads
            .saturating_mul(read_bytes(req, src))
            .saturating_add(Accumulator::bytes(n_groups, len)),
    )?;
    let mut per_group = vec![0usize; n_groups];
    for &(_, g) in members {
        per_group[g as usize] += 1;
    }
    // Range k ends at the first group where the members so far reach k/threads of all.
    let mut bounds = vec![0];
    let mut so_far = 0;
    for (g, n) in per_group.iter().enumerate() {
        so_far += n;
        if bounds.len() < threads && so_far * threads >= members.len() * bounds.len() {
            bounds.push(g + 1);
        }
    }
    bounds.push(n_groups);
    bounds.dedup();
    let mut acc = Accumulator::new(op, n_groups, len);
    let shares = acc.shares(&bounds);
    let work = bounds.windows(2).zip(shares).map(|(range, share)| {
        let ids: Postings = members
            .iter()
            .filter(|m| (range[0]..range[1]).contains(&(m.1 as usize)))
            .map(|m| m.0)
            .collect();
        (range[0], ids, share)
    });
    let results = argus_tsdb::scan_parts(work, |(first, ids, mut share)| -> Result<()> {
        src.visit_values(&ids, req, &mut |id, values| {
            // Members are sorted by id, as are the ids a scan visits.
            if let Ok(i) = members.binary_search_by_key(&id, |m| m.0) {
                share.add(members[i].1 as usize - first, values);
            }
        })?;
        Ok(())
    });
    for r in results {
        joined(r)?;
    }
    Ok(acc)
}

/// A scan thread's result, or the error of a thread that failed (`scan_parts` gives `None`).
fn joined<T>(result: Option<Result<T>>) -> Result<T> {
    result.unwrap_or_else(|| {
        Err(crate::error::Error::Evaluation(
            "a query worker thread failed".into(),
        ))
    })
}

/// What one read of `req` allocates in the store: the stored steps and the output.
fn read_bytes(req: &ReadRequest, src: &dyn SeriesSource) -> usize {
    let multiple = (req.step_ms / src.step_ms().max(1)).max(1) as usize;
    req.len()
        .saturating_mul(multiple.saturating_add(1))
        .saturating_mul(8)
}

/// Tags of an aggregate line: the query's exact tags, `{name: unknown}` if there are none.
fn aggregate_tags(query: &Query) -> TagMap {
    let tags = query.exact_tags();
    if tags.is_empty() {
        return TagMap::from_pairs([("name", "unknown")]);
    }
    tags
}

/// The line drawn when nothing matched (or nothing had data in the window).
pub(crate) fn no_data(query: Option<&Query>, len: usize) -> Line {
    let mut tags = query.map(Query::exact_tags).unwrap_or_default();
    if tags.is_empty() {
        tags = TagMap::from_pairs([("name", "NO_DATA")]);
    }
    Line {
        tags,
        label: Label::Text("NO DATA".to_string()),
        values: vec![f64::NAN; len],
    }
}

fn aggregate(
    af: &AggregateFunction,
    ids: &Postings,
    ctx: &EvalContext,
    req: &ReadRequest,
    src: &dyn SeriesSource,
) -> Result<Accumulator> {
    let len = req.len();
    scan_parallel(
        ids,
        ctx,
        src,
        req,
        Accumulator::bytes(1, len),
        || Accumulator::new(af.op, 1, len),
        |acc, _, values| acc.add(0, values),
    )
}

fn group_by(
    af: &AggregateFunction,
    keys: &[String],
    ids: &Postings,
    ctx: &EvalContext,
    req: &ReadRequest,
    src: &dyn SeriesSource,
) -> Result<PartialKind> {
    let none = || PartialKind::Groups {
        groups: Vec::new(),
        acc: Accumulator::new(af.op, 0, req.len()),
    };
    if ids.is_empty() {
        return Ok(none());
    }
    // Pass 1, tags: the group of each series, as (id, group) in ascending id order. The key
    // string `k=v k2=v2 ` is built in one reused buffer; only a new group allocates.
    ctx.memory
        .charge((ids.len() as usize).saturating_mul(size_of::<(SeriesId, u32)>()))?;
    let mut index: AHashMap<String, u32> = AHashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut members: Vec<(SeriesId, u32)> = Vec::with_capacity(ids.len() as usize);
    let mut buf = String::new();
    // Groups past the line limit are counted, not built: the request fails on them anyway.
    let room = ctx.lines_left();
    let mut over = false;
    src.visit_tags(ids, &mut |id, tags| {
        buf.clear();
        for k in keys {
            let Some(v) = tags.get(k) else { return };
            buf.push_str(k);
            buf.push('=');
            buf.push_str(v);
            buf.push(' ');
        }
        let g = match index.get(buf.as_str()) {
            Some(&g) => g,
            None if groups.len() >= room => {
                over = true;
                return;
            }
            None => {
                let g = groups.len() as u32;
                index.insert(buf.clone(), g);
                groups.push(Group::new(&buf, keys, tags));
                g
            }
        };
        members.push((id, g));
    });
    // At least one group over the room: enough for the error to name the limit.
    ctx.check_lines(groups.len() + usize::from(over), req.len())?;
    if groups.is_empty() {
        return Ok(none());
    }

    // Pass 2, values: only the series that have every key, each added to its group. Ids
    // arrive in the same ascending order, so one cursor maps id to group.
    let kept = Postings::from_sorted_iter(members.iter().map(|m| m.0))
        .unwrap_or_else(|_| members.iter().map(|m| m.0).collect());
    let len = req.len();
    let n_groups = groups.len();
    let threads = scan_threads(kept.len());
    let acc = if threads > 1 && n_groups >= threads * MIN_GROUPS_PER_THREAD {
        scan_group_ranges(af.op, n_groups, &members, threads, ctx, src, req)?
    } else {
        scan_parallel(
            &kept,
            ctx,
            src,
            req,
            Accumulator::bytes(n_groups, len),
            || Accumulator::new(af.op, n_groups, len),
            |acc, id, values| {
                // Members are sorted by id, as are the ids each worker visits.
                if let Ok(i) = members.binary_search_by_key(&id, |m| m.0) {
                    acc.add(members[i].1 as usize, values);
                }
            },
        )?
    };

    Ok(PartialKind::Groups {
        groups: groups.into_iter().map(|g| (g.key, g.values)).collect(),
        acc,
    })
}

/// Groups from which their lines are made on several threads: each line is a fresh vector
/// of the window's values plus its tags and label (10,000 lines of 180 steps: 14 MB).
const PARALLEL_FINISH_GROUPS: usize = 1_024;

/// The lines of `:by` groups with data, in Atlas's order (by key string).
fn finish_groups(
    af: &AggregateFunction,
    keys: &[String],
    groups: &[(String, Vec<String>)],
    acc: &Accumulator,
) -> Result<Vec<Line>> {
    let base = af.query.exact_tags();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_unstable_by(|&a, &b| groups[a].0.cmp(&groups[b].0));
    let line = |g: usize| -> Option<Line> {
        let values = acc.finish(g)?;
        let (key, group_values) = &groups[g];
        let mut tags = base.clone();
        for (k, v) in keys.iter().zip(group_values) {
            tags.insert(k.clone(), v.clone());
        }
        if tags.is_empty() {
            tags = TagMap::from_pairs([("name", "unknown")]);
        }
        Some(Line {
            tags,
            label: Label::Text(format!("({})", key.trim_end_matches(' '))),
            values,
        })
    };
    let threads = if groups.len() >= PARALLEL_FINISH_GROUPS {
        argus_tsdb::scan_cores().min(MAX_SCAN_THREADS)
    } else {
        1
    };
    if threads <= 1 {
        return Ok(order.into_iter().filter_map(line).collect());
    }
    // Contiguous runs of the sorted order, so the threads' lines join in order.
    let per_thread = order.len().div_ceil(threads);
    let parts = argus_tsdb::scan_parts(order.chunks(per_thread), |run| {
        Ok(run.iter().filter_map(|&g| line(g)).collect::<Vec<Line>>())
    });
    let mut out = Vec::with_capacity(groups.len());
    for part in parts {
        out.append(&mut joined(part)?);
    }
    Ok(out)
}

/// One `:by` group: its key string (`k=v k2=v2 `, Atlas's sort key) and its key values.
struct Group {
    key: String,
    values: Vec<String>,
}

impl Group {
    fn new(key: &str, keys: &[String], tags: &dyn Tags) -> Self {
        Group {
            key: key.to_string(),
            values: keys
                .iter()
                .map(|k| tags.get(k).unwrap_or_default().to_string())
                .collect(),
        }
    }
}

fn all(
    ids: &Postings,
    ctx: &EvalContext,
    req: &ReadRequest,
    src: &dyn SeriesSource,
) -> Result<Vec<(TagMap, Vec<f64>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Values first, keeping only series with data in the window, so the tags of series
    // that would be dropped are never copied. Past the line or datapoint limit only the
    // count goes on.
    ctx.memory.charge(read_bytes(req, src))?;
    let mut kept: Vec<(SeriesId, Vec<f64>)> = Vec::new();
    let mut n_with_data = 0usize;
    let room = ctx
        .lines_left()
        .min(ctx.limits.max_datapoints / req.len().max(1));
    src.visit_values(ids, req, &mut |id, values| {
        if values.iter().all(|v| v.is_nan()) {
            return;
        }
        n_with_data += 1;
        if n_with_data <= room {
            kept.push((id, values.to_vec()));
        }
    })?;
    ctx.check_lines(n_with_data, req.len())?;
    let kept_ids = Postings::from_sorted_iter(kept.iter().map(|k| k.0))
        .unwrap_or_else(|_| kept.iter().map(|k| k.0).collect());
    let mut tags_by_id: AHashMap<SeriesId, TagMap> = AHashMap::with_capacity(kept.len());
    src.visit_tags(&kept_ids, &mut |id, tags| {
        tags_by_id.insert(id, tags.to_map());
    });
    Ok(kept
        .into_iter()
        // A series that expired between the two passes has no tags any more.
        .filter_map(|(id, values)| Some((tags_by_id.remove(&id)?, values)))
        .collect())
}

/// Per-group accumulators for one aggregate, `len` steps per group, groups back to back.
/// `n` copies of `value`, written out now. `vec![0; n]` asks the allocator for zeroed
/// memory, which for a large buffer is fresh pages mapped to the kernel's zero page: the
/// first add to each page then faults twice, and the copy-on-write fault flushes the TLB of
/// every core the process runs on (8 % of a 2,000-group `:by` in a profile).
fn written<T: Copy>(n: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, value);
    v
}

/// Groups of an [`Accumulator`] that one thread adds into: all of them, or a range.
struct Share<'a> {
    op: AggrOp,
    len: usize,
    values: &'a mut [f64],
    counts: &'a mut [u32],
}

impl Share<'_> {
    /// Adds one series' values into group `g` (counted from the share's first group).
    #[inline]
    fn add(&mut self, g: usize, input: &[f64]) {
        let range = g * self.len..(g + 1) * self.len;
        match self.op {
            AggrOp::Sum | AggrOp::Avg => {
                let (Some(sums), Some(counts)) = (
                    self.values.get_mut(range.clone()),
                    self.counts.get_mut(range),
                ) else {
                    return;
                };
                for ((s, c), &v) in sums.iter_mut().zip(counts.iter_mut()).zip(input) {
                    let present = !v.is_nan();
                    *s += if present { v } else { 0.0 };
                    *c += u32::from(present);
                }
            }
            AggrOp::Count => {
                let Some(counts) = self.counts.get_mut(range) else {
                    return;
                };
                for (c, &v) in counts.iter_mut().zip(input) {
                    *c += u32::from(!v.is_nan());
                }
            }
            // f64::min/max return the other operand when one is NaN: NaN-ignoring for free.
            AggrOp::Min => {
                let Some(acc) = self.values.get_mut(range) else {
                    return;
                };
                for (a, &v) in acc.iter_mut().zip(input) {
                    *a = a.min(v);
                }
            }
            AggrOp::Max => {
                let Some(acc) = self.values.get_mut(range) else {
                    return;
                };
                for (a, &v) in acc.iter_mut().zip(input) {
                    *a = a.max(v);
                }
            }
        }
    }
}

/// Sums and counts are kept apart so the inner loops are branch-free.
struct Accumulator {
    op: AggrOp,
    len: usize,
    /// Sum (`Sum`, `Avg`) or running min/max (`Min`, `Max`, NaN until a value arrives).
    values: Vec<f64>,
    /// Non-NaN inputs per step (`Sum`, `Count`, `Avg`).
    counts: Vec<u32>,
}

impl Accumulator {
    /// What [`Accumulator::new`] allocates at most.
    fn bytes(groups: usize, len: usize) -> usize {
        groups
            .saturating_mul(len)
            .saturating_mul(size_of::<f64>() + size_of::<u32>())
    }

    fn new(op: AggrOp, groups: usize, len: usize) -> Self {
        let n = groups * len;
        let (values, counts) = match op {
            AggrOp::Sum | AggrOp::Avg => (written(n, 0.0), written(n, 0)),
            AggrOp::Count => (Vec::new(), written(n, 0)),
            AggrOp::Min | AggrOp::Max => (written(n, f64::NAN), Vec::new()),
        };
        Accumulator {
            op,
            len,
            values,
            counts,
        }
    }

    #[inline]
    fn add(&mut self, g: usize, input: &[f64]) {
        Share {
            op: self.op,
            len: self.len,
            values: &mut self.values,
            counts: &mut self.counts,
        }
        .add(g, input);
    }

    /// The accumulator cut into one share per range of groups (`bounds`: ascending group
    /// numbers from 0 to all of them), for threads that each add into their own range.
    fn shares(&mut self, bounds: &[usize]) -> Vec<Share<'_>> {
        fn cut<'a, T>(mut rest: &'a mut [T], bounds: &[usize], len: usize) -> Vec<&'a mut [T]> {
            bounds
                .windows(2)
                .map(|range| {
                    // An op without this buffer leaves it empty: every share gets nothing.
                    let n = ((range[1] - range[0]) * len).min(rest.len());
                    let (share, tail) = std::mem::take(&mut rest).split_at_mut(n);
                    rest = tail;
                    share
                })
                .collect()
        }
        let (op, len) = (self.op, self.len);
        let values = cut(&mut self.values, bounds, len);
        let counts = cut(&mut self.counts, bounds, len);
        values
            .into_iter()
            .zip(counts)
            .map(|(values, counts)| Share {
                op,
                len,
                values,
                counts,
            })
            .collect()
    }

    /// One more group, with nothing added yet.
    fn push_group(&mut self) {
        match self.op {
            AggrOp::Sum | AggrOp::Avg => {
                self.values.resize(self.values.len() + self.len, 0.0);
                self.counts.resize(self.counts.len() + self.len, 0);
            }
            AggrOp::Count => self.counts.resize(self.counts.len() + self.len, 0),
            AggrOp::Min | AggrOp::Max => self.values.resize(self.values.len() + self.len, f64::NAN),
        }
    }

    /// Adds group `theirs` of `other` (same op and length) into group `g`.
    fn merge_group(&mut self, g: usize, other: &Accumulator, theirs: usize) {
        let (mine, from) = (
            g * self.len..(g + 1) * self.len,
            theirs * other.len..(theirs + 1) * other.len,
        );
        if let (Some(c), Some(o)) = (
            self.counts.get_mut(mine.clone()),
            other.counts.get(from.clone()),
        ) {
            for (c, o) in c.iter_mut().zip(o) {
                *c += o;
            }
        }
        let (Some(v), Some(o)) = (self.values.get_mut(mine), other.values.get(from)) else {
            return;
        };
        match self.op {
            AggrOp::Sum | AggrOp::Avg => v.iter_mut().zip(o).for_each(|(v, o)| *v += o),
            AggrOp::Count => {}
            AggrOp::Min => v.iter_mut().zip(o).for_each(|(v, o)| *v = v.min(*o)),
            AggrOp::Max => v.iter_mut().zip(o).for_each(|(v, o)| *v = v.max(*o)),
        }
    }

    /// Adds another accumulator of the same shape (from another thread's share of series).
    fn merge(&mut self, other: &Accumulator) {
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        match self.op {
            AggrOp::Sum | AggrOp::Avg => {
                for (v, o) in self.values.iter_mut().zip(&other.values) {
                    *v += o;
                }
            }
            AggrOp::Count => {}
            AggrOp::Min => {
                for (v, o) in self.values.iter_mut().zip(&other.values) {
                    *v = v.min(*o);
                }
            }
            AggrOp::Max => {
                for (v, o) in self.values.iter_mut().zip(&other.values) {
                    *v = v.max(*o);
                }
            }
        }
    }

    /// The group's line, or `None` when no series had a value at any step.
    fn finish(&self, g: usize) -> Option<Vec<f64>> {
        let range = g * self.len..(g + 1) * self.len;
        let out: Vec<f64> = match self.op {
            AggrOp::Sum => self.values[range.clone()]
                .iter()
                .zip(&self.counts[range])
                .map(|(&s, &c)| if c == 0 { f64::NAN } else { s })
                .collect(),
            AggrOp::Avg => self.values[range.clone()]
                .iter()
                .zip(&self.counts[range])
                .map(|(&s, &c)| if c == 0 { f64::NAN } else { s / f64::from(c) })
                .collect(),
            AggrOp::Count => self.counts[range]
                .iter()
                .map(|&c| if c == 0 { f64::NAN } else { f64::from(c) })
                .collect(),
            AggrOp::Min | AggrOp::Max => self.values[range].to_vec(),
        };
        out.iter().any(|v| !v.is_nan()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use argus_tsdb::{Matcher, SeriesSource};

    use super::*;
    use crate::eval::Limits;
    use crate::model::{Item, TimeSeriesExpr};

    /// A store in a vector: what the trait asks for and nothing more. Values are at the
    /// stored step from 0; only reads at the stored step are supported.
    struct FakeSource(Vec<(TagMap, Vec<f64>)>);

    impl SeriesSource for FakeSource {
        fn step_ms(&self) -> i64 {
            1
        }

        fn select(&self, m: &Matcher) -> Postings {
            (0..self.0.len() as u32)
                .filter(|&i| m.matches(&self.0[i as usize].0))
                .collect()
        }

        fn visit_tags(&self, ids: &Postings, f: &mut dyn FnMut(SeriesId, &dyn Tags)) {
            for id in ids {
                f(id, &self.0[id as usize].0);
            }
        }

        fn visit_values(
            &self,
            ids: &Postings,
            req: &ReadRequest,
            f: &mut dyn FnMut(SeriesId, &[f64]),
        ) -> argus_tsdb::Result<()> {
            for id in ids {
                let data = &self.0[id as usize].1;
                let values: Vec<f64> = (req.start_ms..=req.end_ms)
                    .map(|t| data.get(t as usize).copied().unwrap_or(f64::NAN))
                    .collect();
                f(id, &values);
            }
            Ok(())
        }
    }

    fn source() -> FakeSource {
        let n = f64::NAN;
        let series = [
            ("name=cpu app=a node=1", vec![1.0, 2.0, n]),
            ("name=cpu app=a node=2", vec![3.0, n, n]),
            ("name=cpu app=b node=3", vec![5.0, 6.0, n]),
            ("name=cpu node=4", vec![7.0, 8.0, n]),
            ("name=mem app=a node=1", vec![n, n, n]),
        ];
        FakeSource(
            series
                .into_iter()
                .map(|(tags, values)| {
                    let tags = tags
                        .split(' ')
                        .filter_map(|kv| kv.split_once('='))
                        .collect::<TagMap>();
                    (tags, values)
                })
                .collect(),
        )
    }

    /// Evaluates the one expression `program` leaves and renders each line as
    /// `label {k=v,...} v1 v2 v3`, lines joined by `; `.
    fn check(program: &str, expected: &str) {
        let got = match crate::run(program).as_deref() {
            Ok([Item::Expr(TimeSeriesExpr::Data(expr))]) => {
                let ctx = EvalContext::new(
                    0,
                    2,
                    1,
                    Limits {
                        max_lines: 4,
                        ..Limits::default()
                    },
                )
                .with_lines_used(1);
                match eval_data(expr, &ctx, &source()) {
                    Ok(lines) => lines
                        .iter()
                        .map(|l| {
                            let tags: Vec<String> =
                                l.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            let values: Vec<String> =
                                l.values.iter().map(|v| v.to_string()).collect();
                            format!("{} {{{}}} {}", l.label(), tags.join(","), values.join(" "))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(e) => format!("error: {e}"),
                }
            }
            other => panic!("{program} left {other:?}"),
        };
        assert_eq!(got, expected, "{program}");
    }

    #[test]
    fn data_expressions() {
        check("name,cpu,:eq,:sum", "name=cpu {name=cpu} 16 16 NaN");
        check("name,cpu,:eq,:count", "name=cpu {name=cpu} 4 3 NaN");
        check("name,cpu,:eq,:max", "name=cpu {name=cpu} 7 8 NaN");
        check("app,a,:eq,:min", "app=a {app=a} 1 2 NaN");
        check("app,:has,:avg", "name=unknown {name=unknown} 3 4 NaN");
        check("name,mem,:eq,:sum", "NO DATA {name=mem} NaN NaN NaN");
        check("name,disk,:re,:sum", "NO DATA {name=NO_DATA} NaN NaN NaN");
        check(
            "name,cpu,:eq,:sum,(,app,),:by",
            "(app=a) {app=a,name=cpu} 4 2 NaN; (app=b) {app=b,name=cpu} 5 6 NaN",
        );
        check("name,mem,:eq,:sum,(,app,),:by", "");
        check(
            "app,b,:eq,name,mem,:eq,:or,:all",
            "app=b, name=cpu, node=3 {app=b,name=cpu,node=3} 5 6 NaN",
        );
        check(
            ":true,:sum,(,node,),:by",
            "error: too many lines: 5 > limit 4",
        );
        check(":true,:all", "error: too many lines: 5 > limit 4");
    }

    fn line(op: AggrOp, inputs: &[&[f64]]) -> Option<Vec<f64>> {
        let len = inputs.first().map_or(0, |i| i.len());
        let mut acc = Accumulator::new(op, 1, len);
        for i in inputs {
            acc.add(0, i);
        }
        acc.finish(0)
    }

    fn same(a: Option<Vec<f64>>, b: Option<Vec<f64>>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(&b)
                        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
            }
            _ => false,
        }
    }

    #[test]
    fn aggregates_ignore_nan() {
        let n = f64::NAN;
        let inputs: &[&[f64]] = &[&[1.0, n, 3.0, n], &[2.0, n, n, -1.0], &[n, n, 5.0, n]];
        let cases = [
            (AggrOp::Sum, vec![3.0, n, 8.0, -1.0]),
            (AggrOp::Count, vec![2.0, n, 2.0, 1.0]),
            (AggrOp::Min, vec![1.0, n, 3.0, -1.0]),
            (AggrOp::Max, vec![2.0, n, 5.0, -1.0]),
            (AggrOp::Avg, vec![1.5, n, 4.0, -1.0]),
        ];
        for (op, want) in cases {
            assert!(same(line(op, inputs), Some(want.clone())), "{op:?}");
        }
        for op in [
            AggrOp::Sum,
            AggrOp::Count,
            AggrOp::Min,
            AggrOp::Max,
            AggrOp::Avg,
        ] {
            assert!(same(line(op, &[&[n, n]]), None), "{op:?} of nothing");
        }
    }

    /// Enough series that the scan runs on several threads: the result must be the
    /// sequential one (sums within rounding, counts and extremes exactly).
    #[test]
    fn parallel_scan_matches_sequential() {
        let n = 20_000;
        let src = FakeSource(
            (0..n)
                .map(|i| {
                    let tags = TagMap::from_pairs([
                        ("name", "big".to_string()),
                        ("g", (i % 7).to_string()),
                    ]);
                    let v = |k: usize| {
                        if (i + k).is_multiple_of(5) {
                            f64::NAN
                        } else {
                            (i * 3 + k) as f64
                        }
                    };
                    (tags, vec![v(0), v(1), v(2)])
                })
                .collect(),
        );
        let ctx = EvalContext::new(0, 2, 1, Limits::default());
        for (op, expr) in [
            ("sum", "name,big,:eq,:sum"),
            ("count", "name,big,:eq,:count"),
            ("max", "name,big,:eq,:max"),
            ("min", "name,big,:eq,:min,(,g,),:by"),
            ("avg", "name,big,:eq,:avg,(,g,),:by"),
        ] {
            let stack = crate::run(expr).unwrap();
            let [Item::Expr(TimeSeriesExpr::Data(d))] = stack.as_slice() else {
                panic!("{expr}");
            };
            let got = eval_data(d, &ctx, &src).unwrap();
            for line in got {
                let g: Option<usize> = line.tags.get("g").map(|g| g.parse().unwrap());
                for (k, &value) in line.values.iter().enumerate() {
                    let inputs: Vec<f64> = (0..n)
                        .filter(|i| g.is_none_or(|g| i % 7 == g))
                        .map(|i| src.0[i].1[k])
                        .filter(|v| !v.is_nan())
                        .collect();
                    let want = match op {
                        "sum" => inputs.iter().sum(),
                        "count" => inputs.len() as f64,
                        "max" => inputs.iter().cloned().fold(f64::NAN, f64::max),
                        "min" => inputs.iter().cloned().fold(f64::NAN, f64::min),
                        _ => inputs.iter().sum::<f64>() / inputs.len() as f64,
                    };
                    assert!(
                        (value - want).abs() <= 1e-9 * want.abs(),
                        "{expr} step {k}: {value} vs {want}"
                    );
                }
            }
        }
    }

    /// A `:by` with more groups than [`PARALLEL_FINISH_GROUPS`] (its lines are made on
    /// several threads) gives every group with data its line, in key order, with its values;
    /// a group whose series have no data in the window has none.
    #[test]
    fn many_groups_make_their_lines_in_key_order() {
        let (n, groups) = (6_000usize, 3_000usize);
        assert!(groups > PARALLEL_FINISH_GROUPS);
        let src = FakeSource(
            (0..n)
                .map(|i| {
                    let g = i % groups;
                    let tags = TagMap::from_pairs([
                        ("name", "many".to_string()),
                        ("g", format!("{g:04}")),
                    ]);
                    // Every 7th group has no data at all.
                    let v = if g.is_multiple_of(7) {
                        f64::NAN
                    } else {
                        i as f64
                    };
                    (tags, vec![v, v + 0.5])
                })
                .collect(),
        );
        let limits = Limits {
            max_lines: groups,
            ..Limits::default()
        };
        let ctx = EvalContext::new(0, 1, 1, limits);
        let stack = crate::run("name,many,:eq,:sum,(,g,),:by").unwrap();
        let [Item::Expr(TimeSeriesExpr::Data(d))] = stack.as_slice() else {
            panic!("a data expression");
        };
        let got = eval_data(d, &ctx, &src).unwrap();
        let with_data: Vec<usize> = (0..groups).filter(|g| !g.is_multiple_of(7)).collect();
        assert_eq!(got.len(), with_data.len());
        for (line, &g) in got.iter().zip(&with_data) {
            assert_eq!(line.tags.get("g"), Some(format!("{g:04}").as_str()));
            assert_eq!(line.label(), format!("(g={g:04})"));
            // The group's two series: g and g + groups.
            let sum = (g + g + groups) as f64;
            assert_eq!(line.values, vec![sum, sum + 1.0], "group {g}");
        }
    }

    /// A `:by` over many groups split into group ranges, on any number of threads, gives
    /// what adding every series into one accumulator gives, for every aggregate; groups of
    /// very unequal sizes included (one holds a third of the series).
    #[test]
    fn group_ranges_match_one_accumulator() {
        let n = 6_000usize;
        let groups = 300usize;
        let group_of = |i: usize| if i.is_multiple_of(3) { 0 } else { i % groups };
        let src = FakeSource(
            (0..n)
                .map(|i| {
                    let tags = TagMap::from_pairs([("name", "big")]);
                    let v = |k: usize| {
                        if (i + k).is_multiple_of(4) {
                            f64::NAN
                        } else {
                            ((i * 7 + k) % 1000) as f64 / 8.0
                        }
                    };
                    (tags, vec![v(0), v(1), v(2)])
                })
                .collect(),
        );
        let members: Vec<(SeriesId, u32)> = (0..n)
            .map(|i| (i as SeriesId, group_of(i) as u32))
            .collect();
        let req = ReadRequest {
            start_ms: 0,
            end_ms: 2,
            step_ms: 1,
            cf: argus_tsdb::Consolidation::Avg,
        };
        let ctx = EvalContext::new(0, 2, 1, Limits::default());
        for op in [
            AggrOp::Sum,
            AggrOp::Count,
            AggrOp::Avg,
            AggrOp::Min,
            AggrOp::Max,
        ] {
            let mut whole = Accumulator::new(op, groups, req.len());
            for &(id, g) in &members {
                whole.add(g as usize, &src.0[id as usize].1);
            }
            for threads in 1..=4 {
                let split =
                    scan_group_ranges(op, groups, &members, threads, &ctx, &src, &req).unwrap();
                for g in 0..groups {
                    // Sums in another order may differ in the last bits; these are exact
                    // in binary (eighths), so any order gives the same.
                    let bits = |line: Option<Vec<f64>>| {
                        line.map(|l| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                    };
                    assert_eq!(
                        bits(split.finish(g)),
                        bits(whole.finish(g)),
                        "{op:?} {threads} group {g}"
                    );
                }
            }
        }
    }

    /// Atlas's split: the series dealt out to several parts (nodes), each evaluated up to
    /// its partial aggregate, merged, give what one evaluation over all of them gives.
    #[test]
    fn parts_merge_into_the_whole() {
        let whole = source();
        let n = f64::NAN;
        let mut more = whole.0.clone();
        more.push((
            TagMap::from_pairs([("name", "cpu"), ("app", "c"), ("node", "5")]),
            vec![n, -4.0, 0.5],
        ));
        let whole = FakeSource(more);
        let render = |lines: &[Line]| {
            lines
                .iter()
                .map(|l| format!("{} {:?} {:?}", l.label(), l.tags, l.values))
                .collect::<Vec<_>>()
        };
        let ctx = EvalContext::new(0, 2, 1, Limits::default());
        for expr in [
            "name,cpu,:eq,:sum",
            "name,cpu,:eq,:count",
            "name,cpu,:eq,:min",
            "name,cpu,:eq,:max",
            "app,:has,:avg",
            "name,mem,:eq,:sum",
            "name,cpu,:eq,:sum,(,app,),:by",
            "name,cpu,:eq,:avg,(,app,),:by",
            ":true,:max,(,name,app,),:by",
            "name,cpu,:eq,:all",
            "name,cpu,:eq,:sum,:cf-max",
            "name,cpu,:eq,:sum,1ms,:offset",
        ] {
            let stack = crate::run(expr).unwrap();
            let [Item::Expr(TimeSeriesExpr::Data(d))] = stack.as_slice() else {
                panic!("{expr}");
            };
            let want = render(&eval_data(d, &ctx, &whole).unwrap());
            for parts in [1, 2, 3, 7] {
                let sources: Vec<FakeSource> = (0..parts)
                    .map(|p| {
                        FakeSource(
                            whole
                                .0
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| i % parts == p)
                                .map(|(_, s)| s.clone())
                                .collect(),
                        )
                    })
                    .collect();
                let partials = sources
                    .iter()
                    .map(|src| eval_partial(d, &ctx, src).unwrap())
                    .collect();
                let got = render(&merge(d, &ctx, partials).unwrap());
                assert_eq!(got, want, "{expr} over {parts} parts");
            }
        }
    }

    #[test]
    fn labels() {
        assert_eq!(
            super::super::tags_label(&TagMap::from_pairs([("nf.app", "a"), ("name", "cpu")])),
            "name=cpu, nf.app=a"
        );
    }
}
