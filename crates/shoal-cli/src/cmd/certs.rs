//! `shoal certs init|issue`: a cluster CA and the certificates it signs.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use shoal_security::certs::{self, Subject};
use shoal_types::Perms;

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Create a cluster CA (ca.pem, ca-key.pem) and a first admin token in DIR.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Sign a certificate for a node (--node ID) or a client (--client NAME) with the
    /// CA in DIR; writes <name>.pem and <name>-key.pem (mode 0600) there.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["node", "client"])))]
    Issue {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A node's id (its certificate names it as a node of the cluster).
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// A client's name.
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// Nodes: an IP address the node is reached at; repeatable (127.0.0.1 is always in).
        #[arg(long = "ip", value_name = "IP", requires = "node")]
        ips: Vec<IpAddr>,
        /// Nodes: a DNS name the node is reached at; repeatable (localhost is always in).
        #[arg(long = "dns", value_name = "NAME", requires = "node")]
        dns: Vec<String>,
        /// Clients: what the certificate may do: read, write, exec, admin (each implies
        /// the ones before it).
        #[arg(
            long,
            value_name = "PERMS",
            default_value = "admin",
            requires = "client"
        )]
        perms: String,
    },
}

pub fn run(args: CertsArgs) -> ExitCode {
    match args.action {
        Action::Init { dir } => match certs::init(&dir) {
            Ok(r) => {
                println!(
                    "cluster CA: {} (its key: {}, mode 0600; keep it off the nodes)",
                    r.ca_cert.display(),
                    r.ca_key.display()
                );
                println!("admin token: {}", r.admin_token);
                println!(
                    "  (also in {}; nodes given this directory accept it until `shoal tokens revoke bootstrap`)",
                    dir.join(certs::ADMIN_TOKEN_FILE).display()
                );
                println!(
                    "next: shoal certs issue --dir {} --node <id> [--ip <ip>] for each node",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Action::Issue {
            dir,
            node,
            client,
            mut ips,
            mut dns,
            perms,
        } => {
            let subject = match (node, client) {
                (Some(id), _) => {
                    let local: IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
                    if !ips.contains(&local) {
                        ips.push(local);
                    }
                    if !dns.iter().any(|d| d == "localhost") {
                        dns.push("localhost".into());
                    }
                    Subject::Node { id, ips, dns }
                }
                (None, Some(name)) => match perms.parse::<Perms>() {
                    Ok(perms) => Subject::Client { name, perms },
                    Err(rule) => {
                        eprintln!("error: --perms: {rule}");
                        return ExitCode::from(2);
                    }
                },
                (None, None) => unreachable!("clap requires --node or --client"),
            };
            match certs::issue(&dir, &subject) {
                Ok(files) => {
                    let what = match &subject {
                        Subject::Node { id, .. } => format!("node {id}"),
                        Subject::Client { name, perms } => format!("client {name} ({perms})"),
                    };
                    println!(
                        "{what}: {} and {}",
                        files.cert.display(),
                        files.key.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(e: shoal_security::SecurityError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        shoal_security::SecurityError::Invalid { .. }
        | shoal_security::SecurityError::Exists(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
