//! [`shutdown_signal`]: when a binary stops.

/// Resolves when the process gets SIGTERM or SIGINT (Ctrl-C): the shutdown future every
/// Journey binary passes to its `run`.
pub async fn shutdown_signal() {
    // A handler that cannot be installed leaves that signal to its default action (SIGTERM
    // then kills the process without draining): say so, and wait for the other one.
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot handle SIGINT: Ctrl-C will not drain");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGTERM: a stop will not drain");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
        _ = term => tracing::info!("SIGTERM received: shutting down"),
    }
}
