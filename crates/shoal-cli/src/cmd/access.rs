//! How the CLI reaches a cluster: TLS against the cluster CA and a token, found from
//! flags, the environment, or a `shoal dev` cluster started in this directory.
//!
//! ```text
//!  CA      --ca FILE | SHOAL_CA | $SHOAL_TLS_DIR/ca.pem | .shoal/dev/tls/ca.pem | none: plaintext
//!  token   --token   | SHOAL_TOKEN | $SHOAL_TLS_DIR/admin.token | .shoal/dev/tls/admin.token
//!  cert    --cert FILE --cert-key FILE (SHOAL_CERT / SHOAL_CERT_KEY): a client certificate
//! ```

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use clap::Args;
use shoal_security::{Credentials, Tls, TlsFiles, Transport, certs};

/// Where `shoal dev` keeps its certificates, under its data root.
pub const DEV_TLS_SUBDIR: &str = "tls";
/// `shoal dev`'s default data root (the CLI looks there from the same directory).
pub const DEV_DATA_ROOT: &str = ".shoal/dev";

#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// The cluster CA certificate: talk TLS and verify the nodes against it.
    #[arg(long = "ca", env = "SHOAL_CA", global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A bearer token (`shoal tokens create`; `shoal certs init` printed the first).
    #[arg(
        long = "token",
        env = "SHOAL_TOKEN",
        global = true,
        hide_env_values = true
    )]
    bearer_token: Option<String>,
    /// A client certificate of the cluster CA (`shoal certs issue --client NAME`).
    #[arg(
        long = "cert",
        env = "SHOAL_CERT",
        global = true,
        value_name = "FILE",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(
        long = "cert-key",
        env = "SHOAL_CERT_KEY",
        global = true,
        value_name = "FILE",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
}

static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Resolves the credentials once, at start; an unreadable file is an error that names it.
pub fn init(args: &AccessArgs) -> Result<(), String> {
    let creds = resolve(args)?;
    let _ = CREDENTIALS.set(creds);
    Ok(())
}

/// The credentials every client of this process uses.
pub fn creds() -> Credentials {
    CREDENTIALS.get().cloned().unwrap_or_default()
}

/// An admin client with this process's credentials.
pub fn admin(addr: impl Into<String>) -> shoal_client::AdminClient {
    shoal_client::AdminClient::new(addr).with_credentials(creds())
}

fn resolve(args: &AccessArgs) -> Result<Credentials, String> {
    let tls_dir = std::env::var_os("SHOAL_TLS_DIR").map(PathBuf::from);
    let dev_dir = Path::new(DEV_DATA_ROOT).join(DEV_TLS_SUBDIR);
    let from_dirs = |file: &str| {
        tls_dir
            .iter()
            .chain(std::iter::once(&dev_dir))
            .map(|d| d.join(file))
            .find(|p| p.is_file())
    };
    let ca = args
        .ca_file
        .clone()
        .or_else(|| from_dirs(certs::CA_CERT_FILE));
    let token = match &args.bearer_token {
        Some(t) => Some(t.clone()),
        None => match from_dirs(certs::ADMIN_TOKEN_FILE) {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
    };
    if let Some(t) = &token {
        shoal_security::token::validate(t).map_err(|rule| format!("--token: {rule}"))?;
    }
    let transport = match ca {
        None => {
            if args.client_cert.is_some() {
                return Err(
                    "--cert: needs --ca (the cluster CA the nodes' certificates chain to)".into(),
                );
            }
            Transport::Plain
        }
        Some(ca) => {
            let files = TlsFiles {
                ca,
                own: args.client_cert.clone().zip(args.client_key.clone()),
            };
            Transport::Tls(Tls::load(&files).map_err(|e| e.to_string())?)
        }
    };
    Ok(Credentials { transport, token })
}
