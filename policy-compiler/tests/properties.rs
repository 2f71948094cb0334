//! Property tests on generated clusters: the rendered rulesets, run through the nft interpreter,
//! agree with the evaluator on every flow; rendering is deterministic.

use policy_compiler::analysis::PortProto;
use policy_compiler::generate::{cluster, Shape};
use policy_compiler::plan::compile_all;
use policy_compiler::verify::disagreements;
use proptest::prelude::*;

fn ports() -> Vec<PortProto> {
    [
        "80/TCP", "81/TCP", "8080/TCP", "8001/TCP", "53/UDP", "54/UDP", "80/SCTP", "80/UDP",
    ]
    .iter()
    .map(|p| p.parse().expect("port"))
    .collect()
}

fn outside() -> Vec<std::net::IpAddr> {
    [
        "192.0.2.7",
        "10.0.1.200",
        "10.0.0.11",
        "198.51.100.1",
        "fd00:0:1::99",
        "fd00:5::1",
        "2001:db8::1",
    ]
    .iter()
    .map(|ip| ip.parse().expect("ip"))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rulesets_agree_with_the_evaluator(seed in any::<u64>(), pods in 2usize..9, policies in 0usize..5) {
        let c = cluster(seed, Shape { pods, policies, nodes: 2 });
        let rulesets = compile_all(&c);
        let bad = disagreements(&c, &rulesets, &ports(), &outside());
        prop_assert!(bad.is_empty(), "seed {seed} pods {pods} policies {policies}: {bad:#?}\n{c:#?}");
    }

    #[test]
    fn rendering_is_deterministic(seed in any::<u64>()) {
        let c = cluster(seed, Shape::default());
        let first: Vec<String> = compile_all(&c).values().map(|r| r.render()).collect();
        let again: Vec<String> = compile_all(&c.clone()).values().map(|r| r.render()).collect();
        prop_assert_eq!(first, again);
    }
}
