//! Where policyd's memory goes (`cargo bench --bench agent_memory [-- medium large]`): the parts
//! the agent holds after its first sync on a generated cluster (`policyc generate --size <size>`
//! output read by the `dir:` source), measured by a counting allocator. Each part's size is what
//! a copy of it allocates (so the figures are heap bytes requested, without the allocator's own
//! overhead, which is about 16 bytes per allocation with glibc); the peak is the most the process
//! held at once while reading and compiling. No root needed: the kernel is the in-memory stand-in.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nftpolicy::dataplane::Dataplane;
use nftpolicy::denials::DenialContext;
use nftpolicy::kernel::FakeKernel;
use nftpolicy::source::files::DirSource;
use nftpolicy::source::Store;
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::manifest::cluster_manifests;
use policy_compiler::model::{ObjectRef, Pod};
use policy_compiler::nft::transaction::Transaction;
use policy_compiler::plan::{CompileOptions, LiveNode};

/// The system allocator, counting the bytes and the allocations live, and the most bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged, which
// upholds `GlobalAlloc`'s contract as `System` does; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on as it is (a non-zero size, per the contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc` above) with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` and `layout` come from an allocation of `System`'s; `new_size` is the
        // caller's, non-zero per the contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes and allocations live now.
fn live() -> (usize, usize) {
    (LIVE.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed))
}

/// What building `make`'s result allocates and keeps (bytes, allocations); the result is dropped.
fn size_of_copy<T>(make: impl FnOnce() -> T) -> (usize, usize) {
    let before = live();
    let value = make();
    let after = live();
    drop(value);
    (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    )
}

/// The most `work` held at once beyond what was live before it (bytes; allocations not counted).
fn peak_of(work: impl FnOnce()) -> (usize, usize) {
    let before = live();
    PEAK.store(before.0, Ordering::Relaxed);
    work();
    (PEAK.load(Ordering::Relaxed).saturating_sub(before.0), 0)
}

/// What `release` frees (bytes, allocations).
fn freed(release: impl FnOnce()) -> (usize, usize) {
    let before = live();
    release();
    let after = live();
    (
        before.0.saturating_sub(after.0),
        before.1.saturating_sub(after.1),
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn row(part: &str, (bytes, allocations): (usize, usize)) {
    println!(
        "| {part} | {:.1} MiB | {:.2} M | {:.1} MiB |",
        mib(bytes),
        allocations as f64 / 1e6,
        mib(bytes + 16 * allocations)
    );
}

fn measure(size_name: &str, size: WorkloadSize) {
    let dir = std::env::temp_dir().join(format!(
        "nftpolicy-memory-{size_name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    {
        let cluster = workload(42, size);
        let file = std::fs::File::create(dir.join("cluster.yaml")).expect("manifest file");
        let mut out = std::io::BufWriter::new(file);
        for item in cluster_manifests(&cluster) {
            writeln!(out, "---").expect("write");
            out.write_all(
                serde_saphyr::to_string(&item)
                    .expect("manifest as YAML")
                    .as_bytes(),
            )
            .expect("write");
        }
        out.flush().expect("write");
    }
    let start = live();
    PEAK.store(start.0, Ordering::Relaxed);

    let mut source = DirSource::new(&dir);
    let mut store = Store::new();
    for update in source.poll() {
        store.apply(update);
    }
    // As the agent does before its first compile.
    store.compact();
    let peak_read = PEAK.load(Ordering::Relaxed) - start.0;
    let after_read = live();
    let cluster = store.cluster();
    let node = "node-0";
    let mut live_node = LiveNode::new(cluster, node, CompileOptions::default());
    let (touched, _) = live_node.flush(cluster);
    let mut dataplane = Dataplane::new(FakeKernel::new());
    dataplane
        .apply_touched(live_node.ruleset(), touched.as_ref())
        .expect("apply to the in-memory kernel");
    let origins = Arc::new(live_node.origins().clone());
    let peak_all = PEAK.load(Ordering::Relaxed) - start.0;

    println!(
        "\n{size_name}: {} pods, node {node}\n",
        cluster.pods().len()
    );
    println!("| part | heap | allocations | with 16 B per allocation |");
    println!("|---|---|---|---|");
    let store_size = size_of_copy(|| store.clone());
    row("store (the ClusterState, and invalid objects)", store_size);
    let pods: Vec<&Pod> = cluster.pods().values().collect();
    row(
        "  of which pods' labels",
        size_of_copy(|| pods.iter().map(|p| p.labels.clone()).collect::<Vec<_>>()),
    );
    row(
        "  of which pods' ids (namespace, name)",
        size_of_copy(|| pods.iter().map(|p| p.id.clone()).collect::<Vec<_>>()),
    );
    row(
        "  of which pods' node, ips, host ips, ports, owner",
        size_of_copy(|| {
            pods.iter()
                .map(|p| {
                    (
                        p.node.clone(),
                        p.ips.clone(),
                        p.host_ips.clone(),
                        p.ports.clone(),
                        p.owner.clone(),
                    )
                })
                .collect::<Vec<_>>()
        }),
    );
    row(
        "  of which policies",
        size_of_copy(|| cluster.policies().clone()),
    );
    // The store and the source share strings (the keys), so neither's copy is its size: what
    // they hold together is what the read left, and what the source alone holds is what dropping
    // it first frees (below).
    let held_read = (
        after_read.0.saturating_sub(start.0),
        after_read.1.saturating_sub(start.1),
    );
    row(
        "store and dir source together, as held after the read",
        held_read,
    );
    let live_size = size_of_copy(|| live_node.clone());
    row("live node (all of it)", live_size);
    row(
        "  of which its ruleset",
        size_of_copy(|| live_node.ruleset().clone()),
    );
    row(
        "  of which its origins",
        size_of_copy(|| live_node.origins().clone()),
    );
    let committed = size_of_copy(|| dataplane.committed().cloned());
    row("committed ruleset (the dataplane's copy)", committed);
    let origins_size = size_of_copy(|| live_node.origins().clone());
    row(
        "origins shared with the metrics (the agent's copy)",
        origins_size,
    );
    row(
        "deny log context (with --deny-log only; its pod names shared with the store)",
        size_of_copy(|| DenialContext::new(Arc::clone(&origins), cluster)),
    );
    let mut context = DenialContext::new(Arc::clone(&origins), cluster);
    let changed: Vec<(ObjectRef, Box<[IpAddr]>)> = cluster
        .pods()
        .values()
        .take(1)
        .map(|p| (p.id.clone(), p.ips.clone().into_boxed_slice()))
        .collect();
    row(
        "  its peak for a sync with one pod changed (a rebuild: all of it)",
        peak_of(|| {
            context.update(
                Arc::clone(&origins),
                cluster,
                changed.iter().map(|(id, ips)| (id, &**ips)),
            )
        }),
    );
    drop(context);
    let text = size_of_copy(|| Transaction::full(live_node.ruleset()).render());
    row("the full transaction's text (while applying)", text);
    let parts = [held_read, live_size, committed, origins_size];
    row(
        "total the agent holds (store, source, live node, committed, origins)",
        (
            parts.iter().map(|p| p.0).sum(),
            parts.iter().map(|p| p.1).sum(),
        ),
    );
    println!(
        "\npeak while reading: {:.1} MiB; peak through the first sync: {:.1} MiB; a Pod is {} bytes inline",
        mib(peak_read),
        mib(peak_all),
        std::mem::size_of::<Pod>()
    );
    // What dropping each part frees: its size as held, spare capacity included.
    drop(origins);
    drop(dataplane);
    row("freed by dropping the live node", freed(|| drop(live_node)));
    row(
        "freed by dropping the dir source (what it alone holds)",
        freed(|| drop(source)),
    );
    row("freed by dropping the store then", freed(|| drop(store)));
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let sizes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let sizes = if sizes.is_empty() {
        vec!["medium".to_string(), "large".to_string()]
    } else {
        sizes
    };
    for name in &sizes {
        match WorkloadSize::named(name) {
            Some(size) => measure(name, size),
            None => eprintln!("agent_memory: unknown size {name:?}: use small, medium or large"),
        }
    }
}
