//! `shoal managers ls|add|remove`: the managers' Raft group of one datacenter.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use shoal_client::ClientError;

#[derive(Args, Debug)]
pub struct ManagersArgs {
    /// Any manager's TCP address (changes are forwarded to the leader).
    #[arg(long, env = "SHOAL_ADDR", default_value = super::status::DEFAULT_ADDR, global = true)]
    addr: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Voters, learners, quorum and each peer's circuit breaker.
    Ls {
        /// Print the /v1/quorum JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Add a running manager of this datacenter: a learner until it has caught up
    /// with the log, then a voter (joint consensus).
    Add { id: String },
    /// Remove a manager from the group (joint consensus); it is not added back
    /// automatically until `shoal managers add`.
    Remove { id: String },
}

/// Prints a change's outcome; exit 0 on success, 1 otherwise.
pub fn report(r: Result<String, ClientError>) -> ExitCode {
    match r {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(args: ManagersArgs) -> ExitCode {
    // Adding waits for the newcomer to catch up (up to a minute).
    let client = super::access::admin(args.addr).with_timeout(Duration::from_secs(90));
    match args.action {
        Action::Ls { json } => match client.quorum().await {
            Ok(doc) if json => {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(doc) => {
                print!("{}", table(&doc));
                ExitCode::SUCCESS
            }
            Err(e) => report(Err(e)),
        },
        Action::Add { id } => report(client.add_manager(&id).await),
        Action::Remove { id } => report(client.remove_manager(&id).await),
    }
}

/// ```text
/// ID  KIND     ALIVE  LIFECYCLE  MATCHED  BREAKER
/// m1  voter    yes    active     812      -
/// group dc1 · term 3 · leader m2 · 3 voters, quorum 2 · quorum available
/// ```
fn table(doc: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows = vec![[
        "ID".to_string(),
        "KIND".into(),
        "ALIVE".into(),
        "LIFECYCLE".into(),
        "MATCHED".into(),
        "BREAKER".into(),
    ]];
    for p in doc["peers"].as_array().into_iter().flatten() {
        rows.push([
            s(&p["id"]),
            s(&p["kind"]),
            if p["alive"].as_bool() == Some(true) {
                "yes".into()
            } else {
                "no".into()
            },
            s(&p["lifecycle"]),
            s(&p["matched_index"]),
            s(&p["breaker"]),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let voters = doc["voters"].as_array().map_or(0, Vec::len);
    out.push_str(&format!(
        "group {} · term {} · leader {} · {voters} voters ({} active), quorum {} · {}{}\n",
        s(&doc["group"]),
        s(&doc["term"]),
        s(&doc["leader_id"]),
        s(&doc["active"]),
        s(&doc["quorum"]),
        if doc["quorum_available"].as_bool() == Some(true) {
            "quorum available"
        } else {
            "QUORUM LOST"
        },
        if doc["joint"].as_bool() == Some(true) {
            " · membership change in progress"
        } else {
            ""
        },
    ));
    out
}
