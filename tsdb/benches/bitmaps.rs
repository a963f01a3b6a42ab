//! Benchmark: pure-Rust `roaring` vs `croaring` on our tag-index operations, to keep the faster.
//!
//! Covers index construction, live inserts, AND / OR / ANDNOT, intersection cardinality and
//! iteration over a seeded synthetic 100k-series index, and prints the postings' memory once.
//!
//! Run with `cargo bench -p argus-tsdb --features compare-croaring --bench bitmaps`.
//!
//! Synthetic index (deterministic, seeded with fastrand):
//! * 100,000 series with dense ids `0..100_000`, laid out node-major: node `n` owns ids
//!   `n*10 .. n*10+10` (a node's series are created together, as at ingest);
//! * `nf.node`: 10,000 values, exactly 10 series each;
//! * `name`: 10 values; every node carries each name once (shuffled), so 10,000 series each;
//! * `nf.app`: 400 values, Zipf(s = 1) node counts (largest app ~15k series, smallest 30),
//!   apps assigned to nodes in shuffled order so an app's ids are scattered in 10-id blocks;
//! * `nf.cluster`: `1 + app % 4` clusters per app (~1,000 in total), nodes round-robin;
//! * `status`: on 60% of series, 3 values (70% / 20% / 10%).
//!
//! Postings exist per key=value and per key. Both crates get byte-for-byte the same inputs
//! through the small [`Posting`] trait below; results are cross-checked before timing.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use croaring::{Bitmap, Portable};
use roaring::{MultiOps, RoaringBitmap};

const SEED: u64 = 0xA26_5EED_0B17_3A95;
const N_SERIES: u32 = 100_000;
const N_NAMES: u32 = 10;
const N_APPS: u32 = 400;
const N_NODES: u32 = 10_000;
const SERIES_PER_NODE: u32 = N_SERIES / N_NODES;
const N_STATUS: u32 = 3;
/// Keys with a per-key posting, in posting order.
const KEYS: [&str; 5] = ["name", "nf.app", "nf.cluster", "nf.node", "status"];
/// Target size (series) of the "medium" `nf.app` posting used in `name AND nf.app`.
const MEDIUM_APP_SERIES: u32 = 2_000;
/// Number of `nf.node` values in the `:in` / regex style OR.
const OR_NODES: usize = 50;

/// Indices (into the postings vector) of everything the benchmarks query.
struct Queries {
    /// `name=X` (~10k ids).
    name_x: usize,
    /// `nf.app=Y`, the app closest to [`MEDIUM_APP_SERIES`] series.
    app_y: usize,
    /// `nf.node=Z` (10 ids), a node of app Y.
    node_z: usize,
    /// [`OR_NODES`] distinct `nf.node` postings.
    nodes: Vec<usize>,
    /// All 400 `nf.app` postings.
    apps: Vec<usize>,
    /// The `name` key posting: every series has a name, so this is "all series".
    all: usize,
    /// The 6 postings a newly created series is appended to: its `name`, `nf.app`,
    /// `nf.cluster`, `nf.node` and `status` values, plus the `status` key posting.
    live: [usize; 6],
}

/// The synthetic index as plain data: which postings each series id belongs to.
struct Dataset {
    n_postings: usize,
    n_clusters: u32,
    /// `members[starts[id]..starts[id + 1]]` are the posting indices of series `id`.
    starts: Vec<usize>,
    members: Vec<u32>,
    q: Queries,
}

impl Dataset {
    fn generate() -> Self {
        let mut rng = fastrand::Rng::with_seed(SEED);

        // Zipf(s = 1) number of nodes per app; remainder goes to the largest apps.
        let harmonic: f64 = (1..=N_APPS).map(|r| 1.0 / f64::from(r)).sum();
        let mut app_nodes: Vec<u32> = (1..=N_APPS)
            .map(|r| ((f64::from(N_NODES) / (harmonic * f64::from(r))) as u32).max(1))
            .collect();
        let assigned: u32 = app_nodes.iter().sum();
        assert!(assigned <= N_NODES);
        for i in 0..(N_NODES - assigned) as usize {
            app_nodes[i % N_APPS as usize] += 1;
        }
        let mut node_app: Vec<u32> = app_nodes
            .iter()
            .enumerate()
            .flat_map(|(app, &n)| std::iter::repeat_n(app as u32, n as usize))
            .collect();
        rng.shuffle(&mut node_app);

        // Clusters nested in apps: `1 + app % 4` each (never more than the app's nodes).
        let app_clusters: Vec<u32> = (0..N_APPS)
            .map(|a| (1 + a % 4).min(app_nodes[a as usize]))
            .collect();
        let mut app_cluster_base = Vec::with_capacity(N_APPS as usize);
        let mut n_clusters = 0;
        for &k in &app_clusters {
            app_cluster_base.push(n_clusters);
            n_clusters += k;
        }

        // Posting layout: key=value postings, then one posting per key.
        let name_base = 0;
        let app_base = name_base + N_NAMES;
        let cluster_base = app_base + N_APPS;
        let node_base = cluster_base + n_clusters;
        let status_base = node_base + N_NODES;
        let key_base = status_base + N_STATUS;
        let n_postings = (key_base + KEYS.len() as u32) as usize;

        let mut starts = Vec::with_capacity(N_SERIES as usize + 1);
        let mut members = Vec::with_capacity(N_SERIES as usize * 10);
        let mut app_seen = vec![0u32; N_APPS as usize];
        starts.push(0);
        for node in 0..N_NODES {
            let app = node_app[node as usize];
            let cluster = app_cluster_base[app as usize]
                + app_seen[app as usize] % app_clusters[app as usize];
            app_seen[app as usize] += 1;
            let mut names: Vec<u32> = (0..N_NAMES).collect();
            rng.shuffle(&mut names);
            for &name in &names {
                members.extend([
                    name_base + name,
                    app_base + app,
                    cluster_base + cluster,
                    node_base + node,
                    key_base,
                    key_base + 1,
                    key_base + 2,
                    key_base + 3,
                ]);
                if rng.u32(..100) < 60 {
                    let status = match rng.u32(..10) {
                        0..=6 => 0,
                        7..=8 => 1,
                        _ => 2,
                    };
                    members.extend([status_base + status, key_base + 4]);
                }
                starts.push(members.len());
            }
        }
        assert_eq!(starts.len(), N_SERIES as usize + 1);

        let app_y = (0..N_APPS)
            .min_by_key(|&a| (app_nodes[a as usize] * SERIES_PER_NODE).abs_diff(MEDIUM_APP_SERIES))
            .expect("apps");
        let app_y_nodes: Vec<u32> = (0..N_NODES)
            .filter(|&n| node_app[n as usize] == app_y)
            .collect();
        let node_z = app_y_nodes[rng.usize(..app_y_nodes.len())];
        let mut all_nodes: Vec<u32> = (0..N_NODES).collect();
        rng.shuffle(&mut all_nodes);
        let mut or_nodes = all_nodes[..OR_NODES].to_vec();
        or_nodes.sort_unstable();

        let q = Queries {
            name_x: (name_base + 3) as usize,
            app_y: (app_base + app_y) as usize,
            node_z: (node_base + node_z) as usize,
            nodes: or_nodes.iter().map(|&n| (node_base + n) as usize).collect(),
            apps: (0..N_APPS).map(|a| (app_base + a) as usize).collect(),
            all: key_base as usize,
            live: [
                (name_base + 3) as usize,
                (app_base + app_y) as usize,
                (cluster_base + app_cluster_base[app_y as usize]) as usize,
                (node_base + node_z) as usize,
                status_base as usize,
                (key_base + 4) as usize,
            ],
        };
        Self {
            n_postings,
            n_clusters,
            starts,
            members,
            q,
        }
    }

    /// Index construction: every id, in increasing order, into all of its postings.
    fn build<B: Posting>(&self) -> Vec<B> {
        let mut postings: Vec<B> = (0..self.n_postings).map(|_| B::empty()).collect();
        for (id, w) in self.starts.windows(2).enumerate() {
            for &p in &self.members[w[0]..w[1]] {
                postings[p as usize].insert(id as u32);
            }
        }
        postings
    }
}

/// Container-level composition summed over many bitmaps (bytes are payload, not malloc overhead).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Layout {
    array_containers: u64,
    bitset_containers: u64,
    run_containers: u64,
    array_values: u64,
    run_bytes: u64,
    /// Bytes allocated for array-container storage, including growth slack.
    array_alloc_bytes: u64,
}

impl Layout {
    fn add(&mut self, o: Layout) {
        self.array_containers += o.array_containers;
        self.bitset_containers += o.bitset_containers;
        self.run_containers += o.run_containers;
        self.array_values += o.array_values;
        self.run_bytes += o.run_bytes;
        self.array_alloc_bytes += o.array_alloc_bytes;
    }

    /// Container payload actually holding values: 2 B per array value, 8 KiB per bitset, runs.
    fn used_bytes(&self) -> u64 {
        2 * self.array_values + 8192 * self.bitset_containers + self.run_bytes
    }

    /// Payload plus array-container growth slack.
    fn alloc_bytes(&self) -> u64 {
        self.array_alloc_bytes + 8192 * self.bitset_containers + self.run_bytes
    }
}

/// The subset of bitmap operations the tag index needs, implemented once per crate using each
/// crate's idiomatic (fastest documented) call.
trait Posting: Clone {
    const CRATE: &'static str;
    fn empty() -> Self;
    fn insert(&mut self, id: u32);
    fn remove(&mut self, id: u32);
    fn and(&self, other: &Self) -> Self;
    fn and_len(&self, other: &Self) -> u64;
    fn andnot(&self, other: &Self) -> Self;
    fn union_many(parts: &[&Self]) -> Self;
    fn len(&self) -> u64;
    fn sum_ids(&self) -> u64;
    fn serialized_bytes(&self) -> usize;
    fn run_optimize(&mut self);
    /// Container composition; may release growth slack (used only by the memory report).
    fn measure(&mut self) -> Layout;
}

impl Posting for RoaringBitmap {
    const CRATE: &'static str = "roaring";

    #[inline]
    fn empty() -> Self {
        RoaringBitmap::new()
    }
    #[inline]
    fn insert(&mut self, id: u32) {
        RoaringBitmap::insert(self, id);
    }
    #[inline]
    fn remove(&mut self, id: u32) {
        RoaringBitmap::remove(self, id);
    }
    #[inline]
    fn and(&self, other: &Self) -> Self {
        self & other
    }
    #[inline]
    fn and_len(&self, other: &Self) -> u64 {
        self.intersection_len(other)
    }
    #[inline]
    fn andnot(&self, other: &Self) -> Self {
        self - other
    }
    #[inline]
    fn union_many(parts: &[&Self]) -> Self {
        parts.iter().copied().union()
    }
    #[inline]
    fn len(&self) -> u64 {
        RoaringBitmap::len(self)
    }
    #[inline]
    fn sum_ids(&self) -> u64 {
        self.iter().map(u64::from).sum()
    }
    fn serialized_bytes(&self) -> usize {
        self.serialized_size()
    }
    fn run_optimize(&mut self) {
        self.optimize();
    }
    fn measure(&mut self) -> Layout {
        let s = self.statistics();
        Layout {
            array_containers: u64::from(s.n_array_containers),
            bitset_containers: u64::from(s.n_bitset_containers),
            run_containers: u64::from(s.n_run_containers),
            array_values: u64::from(s.n_values_array_containers),
            run_bytes: s.n_bytes_run_containers,
            // roaring 0.12 reports `Vec<u16>::capacity() * size_of::<u32>()` here
            // (src/bitmap/statistics.rs), i.e. twice the allocated bytes.
            array_alloc_bytes: s.n_bytes_array_containers / 2,
        }
    }
}

impl Posting for Bitmap {
    const CRATE: &'static str = "croaring";

    #[inline]
    fn empty() -> Self {
        Bitmap::new()
    }
    #[inline]
    fn insert(&mut self, id: u32) {
        self.add(id);
    }
    #[inline]
    fn remove(&mut self, id: u32) {
        Bitmap::remove(self, id);
    }
    #[inline]
    fn and(&self, other: &Self) -> Self {
        Bitmap::and(self, other)
    }
    #[inline]
    fn and_len(&self, other: &Self) -> u64 {
        self.and_cardinality(other)
    }
    #[inline]
    fn andnot(&self, other: &Self) -> Self {
        Bitmap::andnot(self, other)
    }
    #[inline]
    fn union_many(parts: &[&Self]) -> Self {
        Bitmap::fast_or(parts)
    }
    #[inline]
    fn len(&self) -> u64 {
        self.cardinality()
    }
    #[inline]
    fn sum_ids(&self) -> u64 {
        self.iter().map(u64::from).sum()
    }
    fn serialized_bytes(&self) -> usize {
        self.get_serialized_size_in_bytes::<Portable>()
    }
    fn run_optimize(&mut self) {
        Bitmap::run_optimize(self);
    }
    fn measure(&mut self) -> Layout {
        let s = self.statistics();
        // CRoaring reports used bytes (cardinality * 2) for arrays; shrinking returns the slack
        // (array capacity plus the container-index arrays).
        let slack = self.shrink_to_fit() as u64;
        Layout {
            array_containers: u64::from(s.n_array_containers),
            bitset_containers: u64::from(s.n_bitset_containers),
            run_containers: u64::from(s.n_run_containers),
            array_values: u64::from(s.n_values_array_containers),
            run_bytes: u64::from(s.n_bytes_run_containers),
            array_alloc_bytes: u64::from(s.n_bytes_array_containers) + slack,
        }
    }
}

/// One posting list per entry of the dataset, built with crate `B`.
struct Index<B> {
    postings: Vec<B>,
}

impl<B: Posting> Index<B> {
    fn p(&self, i: usize) -> &B {
        &self.postings[i]
    }

    fn refs(&self, idx: &[usize]) -> Vec<&B> {
        idx.iter().map(|&i| &self.postings[i]).collect()
    }

    /// Cardinalities of every posting and every benchmarked result, for cross-checking crates.
    fn fingerprint(&self, q: &Queries) -> Vec<u64> {
        let mut f: Vec<u64> = self.postings.iter().map(B::len).collect();
        f.extend([
            self.p(q.name_x).and(self.p(q.app_y)).len(),
            self.p(q.name_x).and(self.p(q.node_z)).len(),
            B::union_many(&self.refs(&q.nodes)).len(),
            B::union_many(&self.refs(&q.apps)).len(),
            self.p(q.all).andnot(self.p(q.name_x)).len(),
            self.p(q.name_x).and_len(self.p(q.app_y)),
            self.p(q.name_x).sum_ids(),
        ]);
        f
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

/// Benchmarks `$body` (an expression over `$ix: &Index<_>`) for both crates in one group.
macro_rules! compare {
    ($c:expr, $rs:expr, $cr:expr, $name:literal, |$ix:ident| $body:expr) => {{
        let mut g = group($c, $name);
        {
            let $ix = $rs;
            g.bench_function(RoaringBitmap::CRATE, |b| b.iter(|| black_box($body)));
        }
        {
            let $ix = $cr;
            g.bench_function(Bitmap::CRATE, |b| b.iter(|| black_box($body)));
        }
        g.finish();
    }};
}

fn bench_build<B: Posting>(g: &mut BenchmarkGroup<'_, WallTime>, ds: &Dataset) {
    g.bench_function(B::CRATE, |b| {
        b.iter_with_large_drop(|| ds.build::<B>());
    });
}

/// Live-insert path: append the next id to the 6 postings of a new series, on postings in their
/// built state (natural growth slack). Timed as insert + remove of that id so the state is
/// restored each iteration without a clone (clones lose the slack and would time reallocation).
fn bench_live_insert<B: Posting>(g: &mut BenchmarkGroup<'_, WallTime>, ix: &Index<B>, q: &Queries) {
    let mut postings = q.live.map(|i| ix.postings[i].clone());
    g.bench_function(B::CRATE, |b| {
        b.iter(|| {
            for p in &mut postings {
                p.insert(black_box(N_SERIES));
            }
            for p in &mut postings {
                p.remove(black_box(N_SERIES));
            }
            black_box(&mut postings);
        });
    });
}

fn memory_report<B: Posting>(ds: &Dataset) {
    let mut postings = ds.build::<B>();
    let serialized: usize = postings.iter().map(B::serialized_bytes).sum();
    let mut layout = Layout::default();
    for p in &mut postings {
        layout.add(p.measure());
    }
    let mut optimized = Layout::default();
    let mut optimized_serialized = 0;
    for p in &mut postings {
        p.run_optimize();
        optimized_serialized += p.serialized_bytes();
        optimized.add(p.measure());
    }
    println!(
        "memory/{:<8} postings={} containers: array={} bitset={} run={} \
         | serialized(portable)={} B \
         | payload used={} B, allocated={} B | after run-optimize: serialized={} B, allocated={} B \
         (runs={})",
        B::CRATE,
        postings.len(),
        layout.array_containers,
        layout.bitset_containers,
        layout.run_containers,
        serialized,
        layout.used_bytes(),
        layout.alloc_bytes(),
        optimized_serialized,
        optimized.alloc_bytes(),
        optimized.run_containers,
    );
}

fn bitmaps(c: &mut Criterion) {
    let ds = Dataset::generate();
    let q = &ds.q;
    let rs = Index {
        postings: ds.build::<RoaringBitmap>(),
    };
    let cr = Index {
        postings: ds.build::<Bitmap>(),
    };

    let fingerprint = rs.fingerprint(q);
    assert_eq!(
        fingerprint,
        cr.fingerprint(q),
        "crates disagree on the same inputs"
    );
    let sizes = |i: usize| rs.p(i).len();
    let n = fingerprint.len();
    println!(
        "dataset: series={N_SERIES} postings={} (clusters={}) inserts={} | name=X {} ids, \
         nf.app=Y {} ids, nf.node=Z {} ids | results: X&Y={} X&Z={} OR{OR_NODES}nodes={} \
         ORapps={} all-X={}",
        ds.n_postings,
        ds.n_clusters,
        ds.members.len(),
        sizes(q.name_x),
        sizes(q.app_y),
        sizes(q.node_z),
        fingerprint[n - 7],
        fingerprint[n - 6],
        fingerprint[n - 5],
        fingerprint[n - 4],
        fingerprint[n - 3],
    );
    memory_report::<RoaringBitmap>(&ds);
    memory_report::<Bitmap>(&ds);

    {
        let mut g = group(c, "build_index");
        // One build is tens of ms: flat sampling keeps 20 samples within the time budget.
        g.sampling_mode(SamplingMode::Flat);
        bench_build::<RoaringBitmap>(&mut g, &ds);
        bench_build::<Bitmap>(&mut g, &ds);
        g.finish();
    }
    {
        let mut g = group(c, "live_insert_remove_6_postings");
        bench_live_insert(&mut g, &rs, q);
        bench_live_insert(&mut g, &cr, q);
        g.finish();
    }

    compare!(c, &rs, &cr, "and_name_app", |ix| {
        ix.p(q.name_x).and(ix.p(q.app_y))
    });
    compare!(c, &rs, &cr, "and_name_node", |ix| {
        ix.p(q.name_x).and(ix.p(q.node_z))
    });
    let (rs_nodes, cr_nodes) = (rs.refs(&q.nodes), cr.refs(&q.nodes));
    compare!(
        c,
        rs_nodes.as_slice(),
        cr_nodes.as_slice(),
        "or_50_nodes",
        |parts| Posting::union_many(parts)
    );
    let (rs_apps, cr_apps) = (rs.refs(&q.apps), cr.refs(&q.apps));
    compare!(
        c,
        rs_apps.as_slice(),
        cr_apps.as_slice(),
        "or_400_apps",
        |parts| Posting::union_many(parts)
    );
    compare!(c, &rs, &cr, "andnot_all_name", |ix| {
        ix.p(q.all).andnot(ix.p(q.name_x))
    });
    compare!(c, &rs, &cr, "and_len_name_app", |ix| {
        ix.p(q.name_x).and_len(ix.p(q.app_y))
    });
    compare!(c, &rs, &cr, "iter_sum_10k", |ix| ix.p(q.name_x).sum_ids());
}

criterion_group!(benches, bitmaps);
criterion_main!(benches);
