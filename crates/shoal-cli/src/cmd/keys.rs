//! `shoal keys ls|install|use|remove`: rotate the gossip key on every member at run
//! time (install the new key everywhere, use it everywhere, remove the old one).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use shoal_client::admin::Method;
use shoal_types::config::parse_cluster_keys;

#[derive(Args, Debug)]
pub struct KeysArgs {
    /// Any member's TCP address: the members it sees alive are changed one by one.
    #[arg(long, env = "SHOAL_ADDR", default_value = super::status::DEFAULT_ADDR, global = true)]
    addr: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Each key's fingerprint and how many members hold it (the key in use marked).
    Ls,
    /// Every member also opens packets sealed with KEY (64 hex characters).
    Install { key: String },
    /// Every member seals with KEY from now on (install it everywhere first).
    Use { key: String },
    /// Every member stops opening packets sealed with KEY (use another one first).
    Remove { key: String },
}

pub async fn run(args: KeysArgs) -> ExitCode {
    let (op, key) = match &args.action {
        Action::Ls => (None, None),
        Action::Install { key } => (Some("install"), Some(key)),
        Action::Use { key } => (Some("use"), Some(key)),
        Action::Remove { key } => (Some("remove"), Some(key)),
    };
    if let Some(k) = key
        && !matches!(parse_cluster_keys(k).as_deref(), Ok([_]))
    {
        eprintln!("error: KEY: must be one key of 64 hex characters (`shoal keygen`)");
        return ExitCode::from(2);
    }
    let doc = match super::access::admin(args.addr.clone()).status().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let members: Vec<(String, String)> = doc
        .members
        .iter()
        .filter(|m| m.state == shoal_types::MemberState::Alive)
        .map(|m| (m.id.clone(), m.addr.clone()))
        .collect();
    let mut failed = 0;
    let mut holders: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (id, addr) in &members {
        let client = super::access::admin(addr.clone());
        let result = match (op, key) {
            (Some(op), Some(key)) => {
                let body = serde_json::json!({ "op": op, "key": key });
                client
                    .request_json(Method::POST, "/v1/keys", Some(body))
                    .await
            }
            _ => client.request_json(Method::GET, "/v1/keys", None).await,
        };
        match result {
            Ok(v) => {
                let keys: Vec<String> = v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect();
                for (i, fp) in keys.iter().enumerate() {
                    let e = holders.entry(fp.clone()).or_default();
                    e.0 += 1;
                    e.1 += usize::from(i == 0);
                }
                if op.is_some() {
                    println!(
                        "{id}: ok ({} keys, in use {})",
                        keys.len(),
                        keys.first().map_or("-", |s| s)
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{id}: {e}");
            }
        }
    }
    if op.is_none() {
        println!("{:<18} {:>8} {:>8}", "KEY", "HOLDERS", "IN USE");
        for (fp, (held, in_use)) in &holders {
            println!(
                "{fp:<18} {held:>5}/{:<2} {in_use:>5}/{}",
                members.len(),
                members.len()
            );
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} members did not answer; run it again once they are back",
            members.len()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
