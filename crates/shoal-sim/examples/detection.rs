//! Detection-latency distribution in simulation: N nodes, T trials of "crash one node,
//! time until every survivor marks it failed, restart it, re-converge".
//!
//! `cargo run -p shoal-sim --release --example detection -- 16 200 [seed]`
//!
//! The simulation has no CPU contention, so this isolates the protocol's own tail from
//! the machine's; compare with bench/failure_detection.py on real processes.

use std::time::Duration;

use shoal_sim::SimCluster;
use shoal_types::{MemberState, Profile};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(16) as usize;
    let trials = args.get(1).copied().unwrap_or(100);
    let seed = args.get(2).copied().unwrap_or(1);
    let mut sim = SimCluster::new(n, seed, Profile::Local, Some([1; 32]));
    sim.run_until(Duration::from_secs(30), |s| s.converged())
        .expect("converges");
    let mut times = Vec::new();
    for t in 0..trials {
        sim.run_for(Duration::from_secs(2));
        let victim = 1 + (t as usize * 7 + seed as usize) % (n - 1);
        sim.crash(victim);
        let killed = sim.now;
        match sim.run_until(Duration::from_secs(30), |s| {
            s.all_see(victim, MemberState::Failed)
        }) {
            Some(d) => {
                times.push(d.as_secs_f64());
                if std::env::var_os("VERBOSE").is_some() && d > Duration::from_secs(2) {
                    let mut seen: Vec<(u128, usize)> = sim
                        .events_about(victim, shoal_membership::EventKind::NodeFailed)
                        .into_iter()
                        .filter(|(_, at)| *at >= killed)
                        .map(|(o, at)| ((at - killed).as_millis(), o))
                        .collect();
                    seen.sort();
                    let aw: Vec<u32> = (0..n)
                        .filter_map(|i| sim.core(i).map(|c| c.awareness()))
                        .collect();
                    println!(
                        "trial {t}: victim {victim} took {d:?}; failed at (ms, observer) {seen:?}; awareness {aw:?}"
                    );
                }
            }
            None => println!("trial {t}: not detected within 30 s"),
        }
        sim.restart(victim);
        sim.run_until(Duration::from_secs(30), |s| s.converged())
            .expect("re-converges");
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "N={n} trials={} p50={:.3}s p90={:.3}s p99={:.3}s max={:.3}s",
        times.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        times[times.len() - 1]
    );
}
