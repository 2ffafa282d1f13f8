//! The process's signals: SIGHUP reloads the configuration, SIGTERM and SIGINT stop.

#[cfg(unix)]
use std::{future::Future, io, sync::Arc};

#[cfg(unix)]
use crate::reload::Reloader;

/// Registers a SIGHUP handler now (so a signal sent once this returns is never the
/// default "terminate") and returns the loop that reloads the configuration on each
/// SIGHUP (see [`crate::reload`]; without a reloader, it logs that there is nothing to do).
#[cfg(unix)]
pub fn reload_on_sighup(reloader: Option<Arc<Reloader>>) -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            match &reloader {
                None => tracing::info!("SIGHUP: no configuration file to reload"),
                // It logs and counts the outcome itself.
                Some(reloader) => drop(reloader.reload().await),
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("signal received");
}
