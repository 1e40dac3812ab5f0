//! A real `satflow serve` process on a loopback port, and clients for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use satflow_query::client::{self, Clients, ConnectOptions};

pub struct Server {
    child: Child,
    pub addr: String,
    /// The server's log (its stderr): a file, so that a chatty server never
    /// blocks on a pipe nobody reads.
    pub log: tempfile::NamedTempFile,
}

impl Server {
    /// Starts `satflow serve --db db` on an ephemeral port, with `extra` flags.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_satflow"))
            .arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("starting satflow serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            let err = std::fs::read_to_string(log.path()).unwrap();
            panic!("satflow serve did not start: {line:?}\n{err}");
        };
        Server {
            addr: addr.to_string(),
            child,
            log,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks the server to stop (SIGTERM) and waits up to `patience` for
    /// it; None when it is still running then.
    pub fn terminate(&mut self, patience: std::time::Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = std::time::Instant::now() + patience;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    pub async fn connect(&self) -> Clients {
        client::connect(&self.url(), ConnectOptions::default())
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A transaction by txid, its first page of inputs and outputs (1,000 of
/// each: the whole of every transaction the tests ask for).
pub async fn get_tx(c: &mut Clients, txid: &str) -> satflow_proto::v1::Transaction {
    c.chain
        .get_transaction(satflow_proto::v1::GetTransactionRequest {
            txid: txid.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}
