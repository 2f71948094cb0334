//! Memory of the compiler's state: the generated cluster (what the agent keeps from its watches),
//! the compiled node ruleset (what it keeps as the committed copy), and the peak heap while compiling,
//! measured with a counting allocator. `cargo bench -p policy-compiler --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::plan::compile_node;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` (a non-zero-size layout) is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from `System`, with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    for (name, size) in [
        ("medium", WorkloadSize::MEDIUM),
        ("large", WorkloadSize::LARGE),
    ] {
        let base = CURRENT.load(Ordering::Relaxed);
        let cluster = workload(42, size);
        let cluster_bytes = CURRENT.load(Ordering::Relaxed) - base;
        PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
        let before = CURRENT.load(Ordering::Relaxed);
        let ruleset = compile_node(&cluster, "node-0");
        let ruleset_bytes = CURRENT.load(Ordering::Relaxed) - before;
        let peak_extra = PEAK.load(Ordering::Relaxed) - before;
        println!(
            "{name}: cluster state {:.1} MiB; node-0 ruleset {:.1} MiB ({} rules, {} elements); \
             peak extra heap while compiling {:.1} MiB; state + ruleset {:.1} MiB",
            mib(cluster_bytes),
            mib(ruleset_bytes),
            ruleset.rule_count(),
            ruleset.element_count(),
            mib(peak_extra),
            mib(cluster_bytes + ruleset_bytes),
        );
        drop(ruleset);
        drop(cluster);
    }
}
