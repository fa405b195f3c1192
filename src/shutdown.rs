//! How a process ends: on SIGINT or SIGTERM, as a [`CancellationToken`] every part of it
//! shares, and with an exit status that says how ([`exit_code`]).

use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled at the first SIGINT or SIGTERM.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let trigger = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
        trigger.cancel();
    });
    Ok(token)
}

/// Exit status 0, or 1 after printing the error with each cause once (configuration errors
/// exit earlier, with 2: [`invalid_config`]).
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped by an error");
            eprintln!("pricefront: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status 2 (a usage error) after printing a configuration error with each cause once:
/// what a main returns when settings, or clients built from them, cannot work, before
/// anything starts.
pub fn invalid_config(error: impl Into<anyhow::Error>) -> ExitCode {
    eprintln!("pricefront: {:#}", error.into());
    ExitCode::from(2)
}
