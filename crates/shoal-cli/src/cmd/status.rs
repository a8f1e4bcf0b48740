//! `shoal status`, `shoal events`, `shoal tag`.

use std::{io::Write, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use shoal_client::render;
use shoal_types::meta::parse_tag;

/// The address of the first `shoal dev` manager.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9000";

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Any node's TCP address.
    #[arg(long, env = "SHOAL_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Print the /v1/status JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Redraw every SECS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

pub async fn status(args: StatusArgs) -> ExitCode {
    let client = super::access::admin(args.addr.clone());
    let Some(every) = args.watch else {
        return match client.status().await {
            Ok(doc) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                } else {
                    print!("{}", render::status_table(&doc));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    };
    if !(every.is_finite() && (0.1..=3600.0).contains(&every)) {
        eprintln!("invalid --watch: SECS must be between 0.1 and 3600");
        return ExitCode::from(2);
    }
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let body = match client.status().await {
            Ok(doc) if args.json => serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
            Ok(doc) => render::status_table(&doc),
            Err(e) => format!("error: {e}\n(retrying every {every}s; Ctrl-C to stop)\n"),
        };
        // Clear the screen, home the cursor, draw.
        print!("\x1b[2J\x1b[H{}", body);
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = &mut stop => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(Duration::from_secs_f64(every)) => {}
        }
    }
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Any node's TCP address.
    #[arg(long, env = "SHOAL_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Print each event as its JSON document.
    #[arg(long)]
    json: bool,
}

pub async fn events(args: EventsArgs) -> ExitCode {
    let client = super::access::admin(args.addr.clone());
    let follow = client.follow_events(|event| {
        if args.json {
            println!("{event}");
        } else {
            println!("{}", event_line(&event));
        }
        std::io::stdout().flush().is_ok()
    });
    tokio::select! {
        result = follow => match result {
            Ok(()) => {
                eprintln!("the node closed the event stream");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ = super::shutdown_signal() => ExitCode::SUCCESS,
    }
}

/// `03:41:07.215Z NodeFailed   w2 (worker, dc1) 127.0.0.1:9202 state=failed`
fn event_line(e: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let m = &e["member"];
    let ms = e["ts_unix_ms"].as_u64().unwrap_or(0);
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z {:<13} {} ({}, {}) {} state={}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000,
        s(&e["kind"]),
        s(&m["id"]),
        s(&m["role"]),
        s(&m["dc"]),
        s(&m["addr"]),
        s(&m["state"]),
    )
}

#[derive(Args, Debug)]
pub struct TagArgs {
    #[command(subcommand)]
    action: TagAction,
}

#[derive(Subcommand, Debug)]
enum TagAction {
    /// Set KEY=VALUE on the node at --addr.
    Set {
        #[arg(value_parser = parse_tag, value_name = "KEY=VALUE")]
        tag: (String, String),
        #[arg(long, env = "SHOAL_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
    },
    /// Remove KEY from the node at --addr.
    Rm {
        key: String,
        #[arg(long, env = "SHOAL_ADDR", default_value = DEFAULT_ADDR)]
        addr: String,
    },
}

pub async fn tag(args: TagArgs) -> ExitCode {
    let result = match &args.action {
        TagAction::Set { tag: (k, v), addr } => {
            super::access::admin(addr.clone()).set_tag(k, v).await
        }
        TagAction::Rm { key, addr } => super::access::admin(addr.clone()).remove_tag(key).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_readable() {
        let e = serde_json::json!({
            "ts_unix_ms": 3_723_004u64,
            "kind": "NodeFailed",
            "member": {"id": "w2", "role": "worker", "dc": "dc1", "addr": "127.0.0.1:9202", "state": "failed"}
        });
        assert_eq!(
            event_line(&e),
            "01:02:03.004Z NodeFailed    w2 (worker, dc1) 127.0.0.1:9202 state=failed"
        );
    }
}
