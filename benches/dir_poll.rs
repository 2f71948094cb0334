//! CPU per poll of the `dir:` source on an unchanged directory holding a generated cluster (as
//! `policyc generate --size large` writes it: one multi-document YAML file), the metadata check
//! against reading and hashing every file on every poll (the behaviour before it,
//! `DirSource::reading_every_file`), the two interleaved poll by poll in one run.
//!
//! `cargo bench --bench dir_poll` (no root). `DIR_POLL_SIZE=medium` for the medium cluster.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use nftpolicy::source::files::{DirSource, RECENT};
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::manifest::cluster_manifests;
use support::percentile;

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer and has no other effect.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Way {
    name: &'static str,
    source: DirSource,
    cpu: Vec<Duration>,
    wall: Vec<Duration>,
}

fn main() {
    let size_name = std::env::var("DIR_POLL_SIZE").unwrap_or_else(|_| "large".into());
    let size = WorkloadSize::named(&size_name).expect("small, medium or large");
    let dir = std::env::temp_dir().join(format!("nftpolicy-dir-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("cluster.yaml");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
        for item in cluster_manifests(&workload(42, size)) {
            writeln!(out, "---").expect("write");
            let text = serde_saphyr::to_string(&item).expect("YAML");
            out.write_all(text.as_bytes()).expect("write");
        }
        out.flush().expect("flush");
    }
    let bytes = std::fs::metadata(&file).expect("stat").len();
    let mut ways = [
        Way {
            name: "read and hash every file (before)",
            source: DirSource::new(&dir).reading_every_file(),
            cpu: Vec::new(),
            wall: Vec::new(),
        },
        Way {
            name: "metadata check (now)",
            source: DirSource::new(&dir),
            cpu: Vec::new(),
            wall: Vec::new(),
        },
    ];
    for way in &mut ways {
        let first = way.source.poll();
        assert!(!first.is_empty(), "the first poll lists the cluster");
    }
    // The file is older than the window in which it is read whatever its metadata.
    std::thread::sleep(RECENT + Duration::from_millis(500));
    let rounds = 30;
    let reads_before: Vec<u64> = ways.iter().map(|w| w.source.reads()).collect();
    for _ in 0..rounds {
        for way in &mut ways {
            let (cpu, wall) = (thread_cpu(), Instant::now());
            let updates = way.source.poll();
            way.wall.push(wall.elapsed());
            way.cpu.push(thread_cpu() - cpu);
            assert!(updates.is_empty(), "nothing changed");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{size_name}: {:.1} MB in one file, {rounds} polls each way, interleaved; load average {}",
        bytes as f64 / 1e6,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let baseline = {
        let mut cpu = ways[0].cpu.clone();
        cpu.sort();
        percentile(&cpu, 0.5)
    };
    for (way, before) in ways.iter_mut().zip(reads_before) {
        way.cpu.sort();
        way.wall.sort();
        let cpu = percentile(&way.cpu, 0.5);
        println!(
            "{:<36} CPU per poll: median {:>9.3} ms, p90 {:>9.3} ms; wall median {:>9.3} ms; files read per poll {}; ratio {:.5}",
            way.name,
            cpu.as_secs_f64() * 1e3,
            percentile(&way.cpu, 0.9).as_secs_f64() * 1e3,
            percentile(&way.wall, 0.5).as_secs_f64() * 1e3,
            (way.source.reads() - before) as f64 / rounds as f64,
            cpu.as_secs_f64() / baseline.as_secs_f64(),
        );
    }
}
