//! The `rookery-server` binary: flags and environment -> [`Config`] -> [`serve`]. Nothing else
//! lives here, so everything the binary does is reachable from tests through the library.

use clap::Parser;

/// mimalloc instead of the system allocator: the gRPC stack allocates and frees small buffers
/// on every call, and glibc's malloc cost a measurable share of the server's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rookery_server::config::{Cli, Config};
use rookery_server::{Listeners, serve, telemetry};

fn main() -> std::process::ExitCode {
    let config = match Config::load(Cli::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rookery-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&config.log);
    // One worker: the current-thread scheduler runs every task woken by a batch of calls before
    // the connection tasks flush, so writes batch; the multi-thread scheduler's LIFO slot would
    // run each connection task right after each call and write once per call.
    let mut runtime = if config.runtime.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if config.runtime.worker_threads > 1 {
        runtime.worker_threads(config.runtime.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rookery-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&config).await?;
        serve(listeners, config, shutdown_signal()).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rookery-server failed");
            eprintln!("rookery-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
