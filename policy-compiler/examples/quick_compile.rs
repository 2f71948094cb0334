use std::time::Instant;
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::plan::{compile_node, ClusterPlan};
use policy_compiler::index::ClusterIndex;
fn main() {
    for (pods, policies, namespaces, nodes) in [(10_000, 1_000, 100, 50), (100_000, 10_000, 1000, 500)] {
        let t = Instant::now();
        let c = workload(42, WorkloadSize { namespaces, pods, policies, nodes });
        let gen = t.elapsed();
        let t = Instant::now();
        let idx = ClusterIndex::new(&c);
        let t_idx = t.elapsed();
        let t = Instant::now();
        let plan = ClusterPlan::new(idx);
        let t_plan = t.elapsed();
        let t = Instant::now();
        let rs = plan.ruleset("node-0");
        let t_render = t.elapsed();
        let t = Instant::now();
        let rs2 = compile_node(&c, "node-0");
        let t_total = t.elapsed();
        let t = Instant::now();
        let c2 = c.clone();
        let t_clone = t.elapsed();
        drop(c2);
        println!("{pods}: gen {gen:?} index {t_idx:?} plan {t_plan:?} render {t_render:?} total {t_total:?} clone {t_clone:?} rules {} elements {}", rs.rule_count(), rs2.element_count());
    }
}
