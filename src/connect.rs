//! Where the CLI's answers come from: the server flags `query`, `trace` and
//! `watch` share, the connection they open, and the bearer token `serve`
//! checks and clients send.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use satflow_query::client::{self, Clients, ConnectOptions};

/// Where the answers come from, and how they are printed.
#[derive(Args)]
pub struct Connection {
    /// A running `satflow serve`.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Query this index database directly instead of a server.
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// File holding the server's bearer token.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// PEM of the CA that signed the server's TLS certificate (use an https:// server URL).
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Connects to the server `conn` names.
pub async fn connect(conn: &Connection) -> Result<Clients> {
    let opts = ConnectOptions {
        token: read_token(conn.token_file.as_ref())?,
        ca_pem: conn
            .tls_ca
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?,
    };
    client::connect(&conn.server, opts).await
}

/// The bearer token in `file` (`--token-file`), without surrounding whitespace.
pub fn read_token(file: Option<&PathBuf>) -> Result<Option<String>> {
    file.map(|p| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("reading token file {}", p.display()))
    })
    .transpose()
}
