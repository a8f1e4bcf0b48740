//! A worker with its own workflow kind: `render`, implemented in Rust.
//!
//! A program that embeds a shoal worker registers custom kinds in a [`Registry`] and
//! starts the node with [`Node::start_with`]; the worker advertises each kind in its
//! gossip tags (`kind.render=yes`), so the managers accept jobs that use it and place
//! those workflows only on workers that have it.
//!
//! ```text
//! shoal dev &                                   # managers on 9000/9002/9004
//! SHOAL_CLUSTER_KEY=<key printed by shoal dev> \
//!   cargo run -p shoal-node --example custom_worker -- r1 127.0.0.1:9250 127.0.0.1:9000
//! shoal submit examples/render.toml --wait
//! ```

use std::{future::Future, pin::Pin, time::Duration};

use shoal_node::{
    Node,
    jobs::exec::{CustomWork, Registry, WorkContext},
};
use shoal_types::{NodeConfig, PartialConfig};

/// Renders `args.frames` frames (100 ms each), reporting progress, stopping when told.
struct Render;

impl CustomWork for Render {
    fn run(
        &self,
        mut ctx: WorkContext,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        Box::pin(async move {
            let frames = ctx
                .args
                .get("frames")
                .and_then(|v| v.as_u64())
                .filter(|n| (1..=100_000).contains(n))
                .ok_or("args.frames: an integer from 1 to 100000 is required")?;
            for frame in 1..=frames {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = ctx.stop.changed() => return Err(format!("stopped at frame {frame}")),
                }
                (ctx.progress)(frame, frames);
            }
            Ok(format!(
                "rendered {frames} frames (attempt {})\n",
                ctx.attempt
            ))
        })
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [id, listen, seeds] = args.as_slice() else {
        eprintln!("usage: custom_worker ID LISTEN_HOST:PORT SEED_HOST:PORT[,…]");
        std::process::exit(2);
    };
    let layer = PartialConfig {
        id: Some(id.clone()),
        role: Some("worker".into()),
        listen: Some(listen.clone()),
        seeds: Some(seeds.split(',').map(str::to_string).collect()),
        profile: Some("local".into()),
        data_dir: Some(std::env::temp_dir().join(format!("shoal-{id}"))),
        cluster_key: std::env::var("SHOAL_CLUSTER_KEY").ok(),
        // Next to `shoal dev`: its CA directory (with this worker's certificate, from
        // `shoal certs issue --dir .shoal/dev/tls --node ID`), or SHOAL_INSECURE=1.
        tls_dir: std::env::var_os("SHOAL_TLS_DIR").map(Into::into),
        insecure: std::env::var_os("SHOAL_INSECURE").map(|_| true),
        ..PartialConfig::default()
    };
    let config = match NodeConfig::resolve(layer) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut registry = Registry::default();
    if let Err(e) = registry.register("render", Render) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let node = match Node::start_with(config, registry).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!(
        "worker {id} runs kind `render`; tcp={} gossip={}",
        node.tcp_addr, node.gossip_addr
    );
    let _ = tokio::signal::ctrl_c().await;
    node.shutdown().await;
}
