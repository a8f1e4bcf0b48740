//! `shoal tokens create|ls|revoke`: API tokens, kept (as SHA-256) in the managers'
//! replicated state.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use shoal_client::ClientError;
use shoal_types::Perms;

#[derive(Args, Debug)]
pub struct TokensArgs {
    /// Any manager's TCP address (changes are forwarded to the leader).
    #[arg(long, env = "SHOAL_ADDR", default_value = super::status::DEFAULT_ADDR, global = true)]
    addr: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Make a token: printed once, only its SHA-256 is stored.
    Create {
        /// 1-64 characters of [A-Za-z0-9_.-].
        name: String,
        /// read, write, exec, admin (comma separated; each implies the ones before it).
        #[arg(long, default_value = "read")]
        perms: String,
    },
    /// Every token: name, permissions, when it was made.
    Ls,
    /// Revoke a token on every manager (`bootstrap`: the one `shoal certs init` printed).
    Revoke { name: String },
}

pub async fn run(args: TokensArgs) -> ExitCode {
    use shoal_client::admin::Method;
    let client = super::access::admin(args.addr);
    match args.action {
        Action::Create { name, perms } => {
            let perms: Perms = match perms.parse() {
                Ok(p) => p,
                Err(rule) => {
                    eprintln!("error: --perms: {rule}");
                    return ExitCode::from(2);
                }
            };
            // Made here: the token itself never crosses the network, only its hash.
            let token = shoal_security::token::generate();
            let body = serde_json::json!({
                "name": name,
                "perms": perms.to_string(),
                "hash": shoal_security::token::hash(&token),
            });
            match client
                .request_json(Method::POST, "/v1/tokens", Some(body))
                .await
            {
                Ok(_) => {
                    println!("token {name} ({perms}): {token}");
                    println!("  shown once; give it as --token or SHOAL_TOKEN");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Action::Ls => match client.request_json(Method::GET, "/v1/tokens", None).await {
            Ok(doc) => {
                print!("{}", table(&doc));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Action::Revoke { name } => {
            let path = format!("/v1/tokens/{name}");
            match client.request_json(Method::DELETE, &path, None).await {
                Ok(v) => {
                    println!("{}", v["message"].as_str().unwrap_or("revoked"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::Status { status, .. } if (400..500).contains(status) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// `NAME  PERMS  CREATED` rows, then whether the bootstrap token still works.
fn table(doc: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{:<24} {:<24} {}\n", "NAME", "PERMS", "CREATED (unix ms)");
    for t in doc["tokens"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<24} {:<24} {}",
            t["name"].as_str().unwrap_or_default(),
            t["perms"].as_str().unwrap_or_default(),
            t["created_unix_ms"].as_u64().unwrap_or_default()
        );
    }
    let revoked = doc["bootstrap_revoked"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "bootstrap token: {}",
        if revoked {
            "revoked"
        } else {
            "active (revoke with `shoal tokens revoke bootstrap`)"
        }
    );
    out
}
