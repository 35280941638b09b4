//! Files that are re-read while the server runs: TLS certificates, keys and CA bundles, the
//! static token list and the JWKS.
//!
//! cert-manager and Kubernetes rotate these by rewriting a Secret volume, which the kubelet
//! does by swapping a symlink to a new directory. File-change notifications see that
//! inconsistently (the watched inode is not the one that changes), so each set of files is
//! polled instead: every `interval` its bytes are read and compared with the last ones, and
//! only a change is parsed. A set that fails to read or parse keeps the last good value and is
//! logged and counted; the server never falls back to nothing. Polling a few small files every
//! few seconds costs nothing measurable.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A set of files read together (a certificate with its key, say), so that a parse sees a
/// consistent pair.
#[derive(Debug, Clone)]
pub struct WatchedFiles {
    what: &'static str,
    paths: Vec<PathBuf>,
}

impl WatchedFiles {
    /// `what` names the set in logs and in `rookery_reloads_total{what}`.
    pub fn new(what: &'static str, paths: Vec<PathBuf>) -> Self {
        Self { what, paths }
    }

    /// Reads every file of the set, naming the one that failed.
    pub fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        self.paths
            .iter()
            .map(|path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display())))
            .collect()
    }

    /// Reads and parses the set once, at start-up (an error stops the server). Returns the
    /// value and the bytes it came from, for [`follow`](Self::follow).
    pub fn load<T>(
        &self,
        parse: &impl Fn(&[Vec<u8>]) -> Result<T, String>,
    ) -> Result<(T, Vec<Vec<u8>>), String> {
        let contents = self.read()?;
        let value = parse(&contents).map_err(|e| format!("{}: {e}", self.what))?;
        Ok((value, contents))
    }

    /// Spawns a task that applies every later change that parses (`last`: the bytes
    /// [`load`](Self::load) read). The task runs until aborted.
    pub fn follow<T: Send + 'static>(
        self,
        mut last: Vec<Vec<u8>>,
        interval: Duration,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + 'static,
        apply: impl Fn(T) + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let files = self.clone();
                let Ok(read) = tokio::task::spawn_blocking(move || files.read()).await else { continue };
                let contents = match read {
                    Ok(contents) if contents == last => continue,
                    Ok(contents) => contents,
                    Err(e) => {
                        self.failed(&e);
                        continue;
                    }
                };
                match parse(&contents) {
                    Ok(value) => {
                        apply(value);
                        last = contents;
                        metrics::counter!("rookery_reloads_total", "what" => self.what, "result" => "applied")
                            .increment(1);
                        tracing::info!(what = self.what, "reloaded");
                    }
                    // Not remembered as `last`: a half-written file is parsed again next time.
                    Err(e) => self.failed(&e),
                }
            }
        })
    }

    fn failed(&self, error: &str) {
        metrics::counter!("rookery_reloads_total", "what" => self.what, "result" => "failed").increment(1);
        tracing::error!(what = self.what, %error, "reload failed; keeping the last good version");
    }
}
