//! The chat benchmark: a local cluster (`shoal dev`: 3 managers, profile `local`,
//! fsync on), one room, S subscribers spread over the three managers, then:
//!
//! - `fanout`: posts at R messages/s for D seconds (open loop: each post starts on its
//!   schedule whether or not earlier ones were answered); for every message, publish
//!   (the post call starting) → the last subscriber's receipt; p50/p99/max.
//! - `max_rate`: 64 posters posting as fast as they are answered for 10 s: the
//!   sustained rate of committed posts.
//!
//! Prints one JSON line per result. Usage:
//!   shoal-chat-bench [--subscribers 100] [--rate 1000] [--secs 60] [--port 32000]

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use shoal_client::{AdminClient, CallOptions, ChatClient, chat::RoomEvent};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shoal_bin() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../../target/release/shoal")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let subscribers = arg("--subscribers", 100);
    let rate = arg("--rate", 1000).max(1);
    let secs = arg("--secs", 60);
    let port = arg("--port", 32_000) as u16;
    let dir = std::env::temp_dir().join(format!("shoal-chat-bench-{}", std::process::id()));
    let _dev = tokio::process::Command::new(shoal_bin())
        .args(["dev", "--managers", "3", "--gates", "0", "--workers", "0"])
        .arg("--insecure")
        .args(["--base-port", &port.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start shoal dev (build it first: cargo build --release)");
    let managers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port + 2 * i)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = AdminClient::new(managers[0].clone())
            .status()
            .await
            .ok()
            .is_some_and(|d| d.raft.is_some_and(|r| r["leader_id"].is_string()));
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let options = CallOptions {
        deadline: Duration::from_secs(30),
        ..CallOptions::default()
    };
    let poster = Arc::new(ChatClient::new(&managers, options).expect("client"));
    poster.create_room("bench").await.expect("create room");

    // Subscribers, each preferring another manager.
    let total = rate * secs;
    let last_seen: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let received = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let mut order = managers.clone();
        order.rotate_left((i % 3) as usize);
        let c = Arc::new(ChatClient::new(&order, options).expect("client"));
        let mut sub = c.subscribe("bench", 1);
        let (last_seen, received) = (last_seen.clone(), received.clone());
        subs.push(tokio::spawn(async move {
            let _c = c;
            while let Some(ev) = sub.next().await {
                if let RoomEvent::Message(m) = ev {
                    let ns = t0.elapsed().as_nanos() as u64;
                    if let Some(slot) = m.text.parse::<usize>().ok().and_then(|i| last_seen.get(i)) {
                        slot.fetch_max(ns, Ordering::Relaxed);
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Every subscriber connected: a warm-up message reaches all of them.
    poster
        .post("bench", "warm", "warm-up", &poster.new_message_id(), 1)
        .await
        .expect("warm-up post");
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < subscribers {
        assert!(Instant::now() < deadline, "subscribers did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // fanout: open loop at `rate`.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut posts = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (p, sent_at, failed) = (poster.clone(), sent_at.clone(), failed.clone());
        posts.push(tokio::spawn(async move {
            sent_at[i as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let id = p.new_message_id();
            if p.post("bench", "pub", &i.to_string(), &id, 1).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    let posting_s = start.elapsed().as_secs_f64();
    let want = subscribers * (total + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat: Vec<f64> = (0..total as usize)
        .filter_map(|i| {
            let (s, r) = (sent_at[i].load(Ordering::Relaxed), last_seen[i].load(Ordering::Relaxed));
            (s > 0 && r > 0).then(|| (r.saturating_sub(s)) as f64 / 1e6)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"fanout\",\"subscribers\":{subscribers},\"rate\":{rate},\"secs\":{secs},\"posted\":{total},\"failed\":{},\"posting_s\":{posting_s:.2},\"deliveries\":{},\"deliveries_expected\":{want},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        failed.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    for s in subs {
        s.abort();
    }

    // max_rate: closed loop, 64 posters, no subscribers.
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(10);
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (p, committed) = (poster.clone(), committed.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let id = p.new_message_id();
                    if p.post("bench", "max", "x", &id, 1).await.is_ok() {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    for w in workers {
        let _ = w.await;
    }
    println!(
        "{{\"bench\":\"max_rate\",\"posters\":64,\"secs\":{:.2},\"posts_per_s\":{:.0}}}",
        t.elapsed().as_secs_f64(),
        committed.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
