//! `shoal`: one binary for every role and every tool. Thin: it parses arguments and
//! calls the library crates.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Fault-tolerant cluster runtime: SWIM gossip membership, Lifeguard, phi accrual.",
    long_about = "shoal runs every role of a cluster from one binary.\n\n\
        Start a local cluster with `shoal dev`, watch it with `shoal status --watch`,\n\
        or run one node with `shoal node --role manager --id m1 --listen 127.0.0.1:9000`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    access: cmd::access::AccessArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node (manager, gate or worker); `shoal node drain` drains a manager.
    Node(Box<cmd::node::NodeCmd>),
    /// Run a local cluster as child processes: 3 managers, 1 gate, 2 workers by default.
    Dev(cmd::dev::DevArgs),
    /// A scripted tour: start a local cluster, kill a worker, watch it detected, restart it.
    Demo(cmd::dev::DemoArgs),
    /// Show every member as one node sees it, with a HEALTHY/DEGRADED verdict.
    Status(cmd::status::StatusArgs),
    /// Follow membership events (one line per event).
    Events(cmd::status::EventsArgs),
    /// Set or remove a tag on a running node; the change reaches every member by gossip.
    Tag(cmd::status::TagArgs),
    /// The replicated key-value store: put, get, del, ls, cas (any manager answers).
    Kv(cmd::kv::KvArgs),
    /// Submit a job spec (TOML or JSON); with --wait, follow it live to the end.
    Submit(cmd::jobs::SubmitArgs),
    /// Jobs: ls, show, cancel, logs.
    Jobs(cmd::jobs::JobsArgs),
    /// Chat rooms: `shoal chat --room R --user U` to chat; rooms, send, history.
    Chat(cmd::chat::ChatArgs),
    /// The managers' Raft group: list voters and quorum, add or remove a manager.
    Managers(cmd::managers::ManagersArgs),
    /// Print a new random cluster key (64 hex characters) for --cluster-key.
    Keygen,
    /// A cluster CA, and node and client certificates it signs (TLS on every port).
    Certs(cmd::certs::CertsArgs),
    /// API tokens with permissions (read, write, exec, admin): create, ls, revoke.
    Tokens(cmd::tokens::TokensArgs),
    /// The gossip keyring on every member: ls, install, use, remove (no restart).
    Keys(cmd::keys::KeysArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_tracing();
    shoal_security::install_crypto_provider();
    if let Err(e) = cmd::access::init(&cli.access) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match &cli.command {
        Command::Node(node) => cmd::node::runtime(node),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Node(args) => cmd::node::command(*args).await,
            Command::Dev(args) => cmd::dev::run(args).await,
            Command::Demo(args) => cmd::dev::demo(args).await,
            Command::Status(args) => cmd::status::status(args).await,
            Command::Events(args) => cmd::status::events(args).await,
            Command::Tag(args) => cmd::status::tag(args).await,
            Command::Kv(args) => cmd::kv::run(args).await,
            Command::Submit(args) => cmd::jobs::submit(args).await,
            Command::Jobs(args) => cmd::jobs::run(args).await,
            Command::Managers(args) => cmd::managers::run(args).await,
            Command::Chat(args) => cmd::chat::run(args).await,
            Command::Certs(args) => cmd::certs::run(args),
            Command::Tokens(args) => cmd::tokens::run(args).await,
            Command::Keys(args) => cmd::keys::run(args).await,
            Command::Keygen => {
                println!("{}", cmd::new_key());
                ExitCode::SUCCESS
            }
        }
    })
}
