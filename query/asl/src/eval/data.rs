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

/// A view of a [`Partial`], for its encoding: the groups' accumulators flattened.
pub enum PartialParts<'a> {
    Groups {
        /// The aggregate: 0 sum, 1 count, 2 min, 3 max, 4 avg.
        op: u8,
        len: usize,
        groups: &'a [(String, Vec<String>)],
        /// Sums (`Sum`, `Avg`) or extremes (`Min`, `Max`), `len` per group back to back.
        values: Vec<f64>,
        /// Values counted per step (`Count`, `Avg`; for `Sum` 1 where the step has a sum
        /// and 0 where it has none), laid out as `values`.
        counts: Vec<u32>,
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
            PartialKind::Groups { groups, acc } => {
                let (values, counts) = acc.flattened();
                PartialParts::Groups {
                    op: OPS.iter().position(|&o| o == acc.op).unwrap_or(0) as u8,
                    len: acc.len,
                    groups,
                    values,
                    counts,
                }
            }
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
        let acc = Accumulator::from_flat(op, len, groups.len(), &values, &counts);
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
                    acc: mut theirs,
                } = part
                else {
                    continue;
                };
                if groups.is_empty() {
                    // The first part is taken as it is: one node's answer costs no copy,
                    // and its groups are indexed only if a second part comes.
                    (groups, acc) = (their_groups, theirs);
                    continue;
                }
                if index.is_empty() {
                    index = groups
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (k.clone(), i))
                        .collect();
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
                    acc.merge_group(mine, &mut theirs, g);
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
            finish_groups(af, expr.grouping(), groups, acc)
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
///
/// `make` gives each thread its accumulator and whatever else it keeps while it scans
/// (a `:by`'s cursor into its members); only the accumulators are merged.
fn scan_parallel<S>(
    ids: &Postings,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
    req: &ReadRequest,
    acc_bytes: usize,
    make: impl Fn() -> (Accumulator, S) + Sync,
    add: impl Fn(&mut (Accumulator, S), SeriesId, &[f64]) + Sync,
) -> Result<Accumulator> {
    let threads = scan_threads(ids.len());
    ctx.memory
        .charge(threads.saturating_mul(read_bytes(req, src).saturating_add(acc_bytes)))?;
    if threads <= 1 {
        let mut state = make();
        if !ids.is_empty() {
            src.visit_values(ids, req, &mut |id, values| add(&mut state, id, values))?;
        }
        return Ok(state.0);
    }
    let parts = src.partition(ids, threads);
    let results = argus_tsdb::scan_parts(&parts, |part| -> Result<Accumulator> {
        let mut state = make();
        src.visit_values(part, req, &mut |id, values| add(&mut state, id, values))?;
        Ok(state.0)
    });
    let mut merged: Option<Accumulator> = None;
    for r in results {
        let acc = joined(r)?;
        match merged.as_mut() {
            None => merged = Some(acc),
            Some(m) => m.merge(acc),
        }
    }
    Ok(merged.unwrap_or_else(|| make().0))
}

/// The group of each series a scan visits, from a `:by`'s members (sorted by id). A scan
/// visits ids in ascending order, and the next one is nearly always the member after the
/// last found or a few past it (a thread of a parallel scan reads every n-th shard's ids),
/// so the cursor looks there before it searches (a binary search per series over all
/// members was 3–5 % of a `:by`).
struct MemberCursor<'a> {
    members: &'a [(SeriesId, u32)],
    /// Where the next id is looked for: every member before it is below the last id asked.
    next: usize,
}

/// Members past the cursor looked at one by one before a binary search of the rest.
const CURSOR_PROBES: usize = 4;

impl<'a> MemberCursor<'a> {
    fn new(members: &'a [(SeriesId, u32)]) -> Self {
        MemberCursor { members, next: 0 }
    }

    /// The group of `id`, or `None` when it is not a member.
    #[inline]
    fn group_of(&mut self, id: SeriesId) -> Option<u32> {
        let ascending = self.next == 0 || self.members[self.next - 1].0 < id;
        if !ascending {
            // Not the order a scan visits in: search them all, and leave the cursor.
            let at = self.members.binary_search_by_key(&id, |m| m.0).ok()?;
            return Some(self.members[at].1);
        }
        let rest = &self.members[self.next..];
        let skip = match rest.iter().take(CURSOR_PROBES).position(|m| m.0 >= id) {
            Some(i) => i,
            None => rest.partition_point(|m| m.0 < id),
        };
        self.next += skip;
        match self.members.get(self.next) {
            Some(&(m, g)) if m == id => {
                self.next += 1;
                Some(g)
            }
            _ => None,
        }
    }
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
        let of_range: Vec<(SeriesId, u32)> = members
            .iter()
            .filter(|m| (range[0]..range[1]).contains(&(m.1 as usize)))
            .copied()
            .collect();
        // Members are sorted by id: the bitmap is appended to, not inserted into.
        let ids = Postings::from_sorted_iter(of_range.iter().map(|m| m.0))
            .unwrap_or_else(|_| of_range.iter().map(|m| m.0).collect());
        (range[0], ids, of_range, share)
    });
    let results = argus_tsdb::scan_parts(work, |(first, ids, of_range, mut share)| -> Result<()> {
        let mut cursor = MemberCursor::new(&of_range);
        src.visit_values(&ids, req, &mut |id, values| {
            if let Some(g) = cursor.group_of(id) {
                share.add(g as usize - first, values);
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
        || (Accumulator::new(af.op, 1, len), ()),
        |(acc, ()), _, values| acc.add(0, values),
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
    // Groups numbered in key order, so their rows lie in the order the lines are written:
    // the text reads every line's value at a step, and lines scattered over the heap
    // miss the TLB at each (10,000 lines: q4 at 100,000 series 25 % slower).
    let mut order: Vec<u32> = (0..groups.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| groups[a as usize].key.cmp(&groups[b as usize].key));
    let mut rank = vec![0u32; groups.len()];
    for (r, &g) in order.iter().enumerate() {
        rank[g as usize] = r as u32;
    }
    for m in &mut members {
        m.1 = rank[m.1 as usize];
    }
    let mut slots: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    let groups: Vec<Group> = order
        .iter()
        .filter_map(|&g| slots[g as usize].take())
        .collect();

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
            || {
                (
                    Accumulator::new(af.op, n_groups, len),
                    MemberCursor::new(&members),
                )
            },
            |(acc, cursor), id, values| {
                if let Some(g) = cursor.group_of(id) {
                    acc.add(g as usize, values);
                }
            },
        )?
    };

    Ok(PartialKind::Groups {
        groups: groups.into_iter().map(|g| (g.key, g.values)).collect(),
        acc,
    })
}

/// A group's key string (`k=v k2=v2 `) and its key values.
type GroupKey = (String, Vec<String>);

/// Groups from which their lines are made on several threads (10,000 lines of 180 steps:
/// 14 MB of values, already in their rows, plus tags and a label each).
const PARALLEL_FINISH_GROUPS: usize = 1_024;

/// The lines of `:by` groups with data, in Atlas's order (by key string). Each group's row
/// becomes its line's values and its strings its tags and label: moved, not copied.
fn finish_groups(
    af: &AggregateFunction,
    keys: &[String],
    groups: Vec<(String, Vec<String>)>,
    acc: Accumulator,
) -> Result<Vec<Line>> {
    let base = af.query.exact_tags();
    let (op, len) = (acc.op, acc.len);
    let n_groups = groups.len();
    let mut sorted: Vec<(GroupKey, Vec<f64>)> = groups.into_iter().zip(acc.rows).collect();
    sorted.sort_unstable_by(|a, b| a.0.0.cmp(&b.0.0));
    let line = |((key, group_values), row): (GroupKey, Vec<f64>)| -> Option<Line> {
        let values = finish_row(op, len, row)?;
        let mut tags = base.clone_with_room(keys.len());
        for (k, v) in keys.iter().zip(group_values) {
            tags.insert(k.clone(), v);
        }
        if tags.is_empty() {
            tags = TagMap::from_pairs([("name", "unknown")]);
        }
        // The key `k=v k2=v2 ` becomes the label `(k=v k2=v2)` in its own buffer.
        let mut label = key;
        label.truncate(label.trim_end_matches(' ').len());
        label.insert(0, '(');
        label.push(')');
        Some(Line {
            tags,
            label: Label::Text(label),
            values,
        })
    };
    let threads = if n_groups >= PARALLEL_FINISH_GROUPS {
        argus_tsdb::scan_cores().min(MAX_SCAN_THREADS)
    } else {
        1
    };
    if threads <= 1 {
        return Ok(sorted.into_iter().filter_map(line).collect());
    }
    // Contiguous runs of the sorted order, so the threads' lines join in order.
    let per_thread = n_groups.div_ceil(threads);
    let mut rest = sorted.into_iter();
    let runs: Vec<Vec<_>> = (0..threads)
        .map(|_| rest.by_ref().take(per_thread).collect())
        .collect();
    let parts = argus_tsdb::scan_parts(runs, |run| {
        Ok(run.into_iter().filter_map(line).collect::<Vec<Line>>())
    });
    let mut out = Vec::with_capacity(n_groups);
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
        // Room for the parentheses its label gets (`finish_groups`): no second allocation.
        let mut owned = String::with_capacity(key.len() + 2);
        owned.push_str(key);
        Group {
            key: owned,
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

/// A group's row: `len` sums, [`NO_SUM`] until a value arrives (`Sum`); `len` sums then
/// `len` counts (`Avg`); `len` counts (`Count`); or `len` running extremes, NaN until a
/// value arrives (`Min`, `Max`). Counts are kept as floats (exact to 2^53) so a row is one
/// vector that [`Accumulator::finish`] turns into its line's values in place.
fn new_row(op: AggrOp, len: usize) -> Vec<f64> {
    match op {
        AggrOp::Sum => vec![f64::from_bits(NO_SUM); len],
        AggrOp::Avg => vec![0.0; 2 * len],
        AggrOp::Count => vec![0.0; len],
        AggrOp::Min | AggrOp::Max => vec![f64::NAN; len],
    }
}

/// A sum no value has been added to: a NaN whose payload arithmetic never makes (an
/// operation on a NaN keeps that NaN's payload, and inputs that are NaN are not added), so
/// a sum that is NaN because it added +inf and -inf stays NaN. A sum starts from +0.0 at
/// its first value, as if it had been 0 all along: the same bits as before (`0.0 + v`).
const NO_SUM: u64 = 0x7ff8_0000_5eed_0000;

/// `sum + v` for a present `v`, where `sum` may be [`NO_SUM`].
#[inline]
fn add_to_sum(sum: f64, v: f64) -> f64 {
    let base = if sum.to_bits() == NO_SUM { 0.0 } else { sum };
    base + v
}

/// Adds one series' values into a row made by [`new_row`] (made now if the row was taken
/// or added empty). The loops are branch-free: a missing value adds 0 to the sum and 0 to
/// the count.
#[inline]
fn add_to_row(op: AggrOp, len: usize, row: &mut Vec<f64>, input: &[f64]) {
    if row.is_empty() {
        *row = new_row(op, len);
    }
    match op {
        AggrOp::Sum => {
            for (s, &v) in row.iter_mut().zip(input) {
                *s = if v.is_nan() { *s } else { add_to_sum(*s, v) };
            }
        }
        AggrOp::Avg => {
            let (sums, counts) = row.split_at_mut(len);
            for ((s, c), &v) in sums.iter_mut().zip(counts.iter_mut()).zip(input) {
                let present = !v.is_nan();
                *s += if present { v } else { 0.0 };
                *c += if present { 1.0 } else { 0.0 };
            }
        }
        AggrOp::Count => {
            for (c, &v) in row.iter_mut().zip(input) {
                *c += if v.is_nan() { 0.0 } else { 1.0 };
            }
        }
        // f64::min/max return the other operand when one is NaN: NaN-ignoring for free.
        AggrOp::Min => {
            for (a, &v) in row.iter_mut().zip(input) {
                *a = a.min(v);
            }
        }
        AggrOp::Max => {
            for (a, &v) in row.iter_mut().zip(input) {
                *a = a.max(v);
            }
        }
    }
}

/// Adds row `theirs` into row `mine` (both of one op and length). A group nothing was
/// added to on one side takes the other's row as it is: the same bits as adding it to a
/// fresh row (a sum starts at +0.0 and so is never -0.0; `NaN.min(x)` is `x`).
fn merge_rows(op: AggrOp, mine: &mut Vec<f64>, theirs: Vec<f64>) {
    if theirs.is_empty() {
        return;
    }
    if mine.is_empty() {
        *mine = theirs;
        return;
    }
    match op {
        AggrOp::Sum => mine.iter_mut().zip(&theirs).for_each(|(m, &t)| {
            if t.to_bits() != NO_SUM {
                *m = add_to_sum(*m, t);
            }
        }),
        // Sums and counts alike are added.
        AggrOp::Avg | AggrOp::Count => mine.iter_mut().zip(&theirs).for_each(|(m, t)| *m += t),
        AggrOp::Min => mine
            .iter_mut()
            .zip(&theirs)
            .for_each(|(m, t)| *m = m.min(*t)),
        AggrOp::Max => mine
            .iter_mut()
            .zip(&theirs)
            .for_each(|(m, t)| *m = m.max(*t)),
    }
}

/// A row's line values, made in place: a step no series had a value at is NaN. `None`
/// when no step has one.
fn finish_row(op: AggrOp, len: usize, mut row: Vec<f64>) -> Option<Vec<f64>> {
    if row.is_empty() {
        return None;
    }
    match op {
        AggrOp::Sum => row
            .iter_mut()
            .filter(|s| s.to_bits() == NO_SUM)
            .for_each(|s| *s = f64::NAN),
        AggrOp::Avg => {
            let (sums, counts) = row.split_at_mut(len);
            for (s, &c) in sums.iter_mut().zip(counts.iter()) {
                *s = if c == 0.0 { f64::NAN } else { *s / c };
            }
            row.truncate(len);
            // Shrinking a heap chunk splits it where it lies: no copy.
            row.shrink_to_fit();
        }
        AggrOp::Count => row
            .iter_mut()
            .filter(|c| **c == 0.0)
            .for_each(|c| *c = f64::NAN),
        AggrOp::Min | AggrOp::Max => {}
    }
    row.iter().any(|v| !v.is_nan()).then_some(row)
}

/// Groups of an [`Accumulator`] that one thread adds into: all of them, or a range.
struct Share<'a> {
    op: AggrOp,
    len: usize,
    rows: &'a mut [Vec<f64>],
}

impl Share<'_> {
    /// Adds one series' values into group `g` (counted from the share's first group).
    #[inline]
    fn add(&mut self, g: usize, input: &[f64]) {
        if let Some(row) = self.rows.get_mut(g) {
            add_to_row(self.op, self.len, row, input);
        }
    }
}

/// Per-group accumulators for one aggregate, `len` steps per group: one row per group, which
/// becomes its line's values without a copy.
struct Accumulator {
    op: AggrOp,
    len: usize,
    rows: Vec<Vec<f64>>,
}

impl Accumulator {
    /// What [`Accumulator::new`] and the rows added to allocate at most.
    fn bytes(groups: usize, len: usize) -> usize {
        groups.saturating_mul(
            len.saturating_mul(2 * size_of::<f64>())
                .saturating_add(size_of::<Vec<f64>>()),
        )
    }

    /// Every group's row made now, one after another: the lines then lie in group order.
    fn new(op: AggrOp, groups: usize, len: usize) -> Self {
        let rows = (0..groups).map(|_| new_row(op, len)).collect();
        Accumulator { op, len, rows }
    }

    #[inline]
    fn add(&mut self, g: usize, input: &[f64]) {
        if let Some(row) = self.rows.get_mut(g) {
            add_to_row(self.op, self.len, row, input);
        }
    }

    /// The accumulator cut into one share per range of groups (`bounds`: ascending group
    /// numbers from 0 to all of them), for threads that each add into their own range.
    fn shares(&mut self, bounds: &[usize]) -> Vec<Share<'_>> {
        let (op, len) = (self.op, self.len);
        let mut rest = self.rows.as_mut_slice();
        bounds
            .windows(2)
            .map(|range| {
                let n = (range[1] - range[0]).min(rest.len());
                let (rows, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                Share { op, len, rows }
            })
            .collect()
    }

    /// One more group, with nothing added yet.
    fn push_group(&mut self) {
        self.rows.push(Vec::new());
    }

    /// Adds group `theirs` of `other` (same op and length) into group `g`, taking its row.
    fn merge_group(&mut self, g: usize, other: &mut Accumulator, theirs: usize) {
        let (Some(mine), Some(row)) = (self.rows.get_mut(g), other.rows.get_mut(theirs)) else {
            return;
        };
        merge_rows(self.op, mine, std::mem::take(row));
    }

    /// Adds another accumulator of the same shape (from another thread's share of series).
    fn merge(&mut self, other: Accumulator) {
        for (mine, theirs) in self.rows.iter_mut().zip(other.rows) {
            merge_rows(self.op, mine, theirs);
        }
    }

    /// The group's line values, taken out of the accumulator, or `None` when no series had
    /// a value at any step.
    fn finish(&mut self, g: usize) -> Option<Vec<f64>> {
        let row = std::mem::take(self.rows.get_mut(g)?);
        finish_row(self.op, self.len, row)
    }

    /// The sums or extremes, and the counts, of every group back to back, as a part
    /// travels (a group nothing was added to as a fresh row).
    fn flattened(&self) -> (Vec<f64>, Vec<u32>) {
        let (len, cells) = (self.len, self.rows.len() * self.len);
        let (mut values, mut counts) = match self.op {
            AggrOp::Sum | AggrOp::Avg => (Vec::with_capacity(cells), Vec::with_capacity(cells)),
            AggrOp::Count => (Vec::new(), Vec::with_capacity(cells)),
            AggrOp::Min | AggrOp::Max => (Vec::with_capacity(cells), Vec::new()),
        };
        let fresh = new_row(self.op, len);
        for row in &self.rows {
            let row = if row.is_empty() { &fresh } else { row };
            match self.op {
                // A sum travels with 1 for a step that has one, 0 (and a sum of 0) for one
                // that has none.
                AggrOp::Sum => {
                    for &s in row {
                        let none = s.to_bits() == NO_SUM;
                        values.push(if none { 0.0 } else { s });
                        counts.push(u32::from(!none));
                    }
                }
                AggrOp::Avg => {
                    values.extend_from_slice(&row[..len]);
                    counts.extend(row[len..].iter().map(|&c| c as u32));
                }
                AggrOp::Count => counts.extend(row.iter().map(|&c| c as u32)),
                AggrOp::Min | AggrOp::Max => values.extend_from_slice(row),
            }
        }
        (values, counts)
    }

    /// The accumulator [`Accumulator::flattened`] gave, given that `values` and `counts` are
    /// as long as the op keeps for `groups` groups of `len` steps.
    fn from_flat(op: AggrOp, len: usize, groups: usize, values: &[f64], counts: &[u32]) -> Self {
        let rows = (0..groups)
            .map(|g| {
                let cells = g * len..(g + 1) * len;
                let counted = || counts[cells.clone()].iter().map(|&c| f64::from(c));
                match op {
                    AggrOp::Sum => values[cells.clone()]
                        .iter()
                        .zip(&counts[cells.clone()])
                        .map(|(&s, &c)| if c == 0 { f64::from_bits(NO_SUM) } else { s })
                        .collect(),
                    AggrOp::Avg => values[cells.clone()]
                        .iter()
                        .copied()
                        .chain(counted())
                        .collect(),
                    AggrOp::Count => counted().collect(),
                    AggrOp::Min | AggrOp::Max => values[cells.clone()].to_vec(),
                }
            })
            .collect();
        Accumulator { op, len, rows }
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

    /// A sum is the bits of adding its values to +0.0 in order: a step whose values add
    /// +inf and -inf stays NaN whatever comes after, -0.0 alone sums to +0.0, and a step
    /// with no value is NaN; merged from parts (a part that saw no value at a step, or
    /// none at all, included) and through a part's bytes, the same.
    #[test]
    fn sums_are_the_bits_of_adding_from_zero() {
        let (n, inf) = (f64::NAN, f64::INFINITY);
        let inputs: Vec<Vec<f64>> = vec![
            vec![inf, -0.0, n, 1e308, 0.1, n],
            vec![-inf, -0.0, n, 1e308, 0.2, n],
            vec![5.0, n, n, -1e308, 0.3, n],
            vec![n, -0.0, 2.5, n, 1e-300, n],
        ];
        // What sums and counts from 0 gave: per part a sum from +0.0 of its values, the
        // parts' sums added (a part without a value at the step adding its 0), NaN where
        // no part had a value.
        let reference = |parts: &[&[Vec<f64>]]| -> Vec<f64> {
            (0..6)
                .map(|t| {
                    let (mut sum, mut count) = (0.0, 0);
                    for part in parts {
                        let present = part.iter().map(|i| i[t]).filter(|v| !v.is_nan());
                        let (s, c) = present.fold((0.0, 0), |(s, c), v| (s + v, c + 1));
                        (sum, count) = (sum + s, count + c);
                    }
                    if count == 0 { f64::NAN } else { sum }
                })
                .collect()
        };
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let refs: Vec<&[f64]> = inputs.iter().map(|i| i.as_slice()).collect();
        let whole = line(AggrOp::Sum, &refs).unwrap();
        assert_eq!(bits(&whole), bits(&reference(&[&inputs])));
        assert!(whole[0].is_nan() && whole[3] == f64::INFINITY && whole[5].is_nan());
        assert_eq!(whole[1].to_bits(), 0.0f64.to_bits());
        // Split at every point, the second part's row merged into the first's, directly
        // and after a round trip through the flattened form a part travels as.
        for cut in 0..=inputs.len() {
            for through_bytes in [false, true] {
                let mut first = Accumulator::new(AggrOp::Sum, 1, 6);
                let mut second = Accumulator::new(AggrOp::Sum, 1, 6);
                for (k, i) in inputs.iter().enumerate() {
                    if k < cut {
                        first.add(0, i)
                    } else {
                        second.add(0, i)
                    }
                }
                if through_bytes {
                    let (values, counts) = second.flattened();
                    second = Accumulator::from_flat(AggrOp::Sum, 6, 1, &values, &counts);
                }
                first.merge(second);
                let (a, b) = inputs.split_at(cut);
                let want = reference(&[a, b]);
                assert_eq!(bits(&first.finish(0).unwrap()), bits(&want), "cut {cut}");
            }
        }
        assert_eq!(line(AggrOp::Sum, &[&[n, n]]), None);
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
            // Sums in another order may differ in the last bits; these are exact in binary
            // (eighths), so any order gives the same.
            let bits = |line: Option<Vec<f64>>| {
                line.map(|l| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            let want: Vec<_> = (0..groups).map(|g| bits(whole.finish(g))).collect();
            for threads in 1..=4 {
                let mut split =
                    scan_group_ranges(op, groups, &members, threads, &ctx, &src, &req).unwrap();
                for (g, want) in want.iter().enumerate() {
                    assert_eq!(&bits(split.finish(g)), want, "{op:?} {threads} group {g}");
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

    /// The cursor finds what a binary search of all members finds, for ids asked as a
    /// parallel scan's threads ask them (ascending, every n-th shard), with non-members
    /// among them, and also out of order.
    #[test]
    fn member_cursor_finds_what_a_search_finds() {
        let mut rng = fastrand::Rng::with_seed(18);
        for round in 0..200 {
            let mut id = 0;
            let members: Vec<(SeriesId, u32)> = (0..rng.usize(0..300))
                .map(|_| {
                    id += rng.u32(1..4);
                    (id, rng.u32(0..50))
                })
                .collect();
            let top = members.last().map_or(10, |m| m.0 + 10);
            let search = |id: SeriesId| {
                members
                    .binary_search_by_key(&id, |m| m.0)
                    .ok()
                    .map(|i| members[i].1)
            };
            let threads = 1 + round % 4;
            for thread in 0..threads {
                let mut cursor = MemberCursor::new(&members);
                let asked = (0..top)
                    .filter(|id| (*id as usize & 63) % threads == thread && rng.u8(0..10) < 8);
                for id in asked {
                    assert_eq!(cursor.group_of(id), search(id), "round {round}, id {id}");
                }
            }
            let mut cursor = MemberCursor::new(&members);
            for _ in 0..100 {
                let id = rng.u32(0..top);
                assert_eq!(cursor.group_of(id), search(id), "round {round}, id {id}");
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
