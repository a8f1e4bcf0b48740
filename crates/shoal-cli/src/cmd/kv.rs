//! `shoal kv put|get|del|ls|cas`: the replicated key-value store.
//!
//! Exit codes: 0 done; 1 not found / compare failed / no server could complete the
//! call; 2 the request was refused as invalid (nothing was written).

use std::{
    io::{Read, Write},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Subcommand};
use serde_json::json;
use shoal_client::{
    KvClient, KvClientError, KvOptions,
    kv::{DEV_SERVERS, VALUE_BYTES_MAX, parse_servers},
};
use shoal_proto::v1::KeyValue;

#[derive(Args, Debug)]
pub struct KvArgs {
    /// Managers to talk to, comma-separated HOST:PORT (any of them; writes reach the
    /// leader wherever it is).
    #[arg(long, env = "SHOAL_SERVERS", default_value = DEV_SERVERS, global = true)]
    servers: String,
    /// Give up after this many seconds (across retries and servers).
    #[arg(long, value_name = "SECS", default_value_t = 15.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Write VALUE under KEY; exits 0 once the write is committed by a majority.
    Put {
        key: String,
        /// The value; `-` reads it from stdin.
        value: String,
    },
    /// Print KEY's value and a newline; a missing key exits 1.
    Get {
        key: String,
        /// Answer from the contacted server's state without checking with the leader
        /// (faster; may miss the latest writes).
        #[arg(long)]
        stale: bool,
        /// Print value and revisions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete KEY (a missing key is not an error).
    Del { key: String },
    /// List the keys starting with PREFIX (all keys without one), in key order.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        stale: bool,
        /// Print a JSON array of {key, value, create_revision, mod_revision, version}.
        #[arg(long)]
        json: bool,
        /// At most this many keys (0: the server's maximum, 10000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Write VALUE under KEY only if the key's revision is R (0: only if absent).
    Cas {
        key: String,
        value: String,
        #[arg(long, value_name = "R")]
        revision: u64,
    },
}

fn value_bytes(v: &str) -> Result<Vec<u8>, String> {
    if v != "-" {
        return Ok(v.as_bytes().to_vec());
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .take(VALUE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("value: cannot read stdin: {e}"))?;
    Ok(buf)
}

fn fail(e: &KvClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        KvClientError::Rejected(_) | KvClientError::BadServers(_) => ExitCode::from(2),
        KvClientError::Unavailable { .. } => ExitCode::FAILURE,
    }
}

fn kv_json(kv: &KeyValue) -> serde_json::Value {
    json!({
        "key": kv.key,
        "value": String::from_utf8_lossy(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

pub async fn run(args: KvArgs) -> ExitCode {
    if !(args.timeout.is_finite() && (0.1..=3600.0).contains(&args.timeout)) {
        eprintln!("invalid --timeout: SECS must be between 0.1 and 3600");
        return ExitCode::from(2);
    }
    let servers = match parse_servers(&args.servers) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let deadline = Duration::from_secs_f64(args.timeout);
    let options = KvOptions {
        attempt_timeout: KvOptions::default().attempt_timeout.min(deadline),
        deadline,
        ..KvOptions::default()
    };
    let client = match KvClient::connect(&servers, options, &super::access::creds()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut out = std::io::stdout().lock();
    match args.command {
        KvCommand::Put { key, value } => {
            let value = match value_bytes(&value) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match client.put(&key, &value).await {
                Ok(w) => {
                    let _ = writeln!(out, "OK revision {}", w.revision);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        KvCommand::Get { key, stale, json } => match client.get(&key, stale).await {
            Ok(Some(kv)) => {
                if json {
                    let _ = writeln!(out, "{}", kv_json(&kv));
                } else {
                    let _ = out.write_all(&kv.value);
                    let _ = out.write_all(b"\n");
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                eprintln!("key `{key}` not found");
                ExitCode::FAILURE
            }
            Err(e) => fail(&e),
        },
        KvCommand::Del { key } => match client.delete(&key).await {
            Ok(w) if w.previous.is_some() => {
                let _ = writeln!(out, "deleted (revision {})", w.revision);
                ExitCode::SUCCESS
            }
            Ok(_) => {
                let _ = writeln!(out, "key `{key}` did not exist; nothing deleted");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        KvCommand::Ls {
            prefix,
            stale,
            json,
            limit,
        } => match client.list(&prefix, stale, limit).await {
            Ok(listing) => {
                if json {
                    let all: Vec<_> = listing.kvs.iter().map(kv_json).collect();
                    let _ = writeln!(out, "{}", serde_json::Value::Array(all));
                } else {
                    for kv in &listing.kvs {
                        let _ = writeln!(out, "{}\t{}", kv.key, String::from_utf8_lossy(&kv.value));
                    }
                }
                if listing.more {
                    eprintln!(
                        "(more keys match `{prefix}`; showing the first {})",
                        listing.kvs.len()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        KvCommand::Cas {
            key,
            value,
            revision,
        } => {
            let value = match value_bytes(&value) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match client.cas(&key, &value, revision).await {
                Ok(c) if c.succeeded => {
                    let _ = writeln!(out, "OK revision {}", c.revision);
                    ExitCode::SUCCESS
                }
                Ok(c) => {
                    eprintln!(
                        "compare failed: `{key}` is at revision {} (0 = absent), not {revision}; nothing written",
                        c.revision
                    );
                    ExitCode::FAILURE
                }
                Err(e) => fail(&e),
            }
        }
    }
}
