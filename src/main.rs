use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use patchgate::{Config, Proxy};

/// A reverse proxy that gives a legacy JSON API strong ETags, PATCH, enforced
/// preconditions and no lost updates.
/// What `--version` says is built in: every feature ships in every build.
const BUILT_IN: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nbuilt in: HTTP/1.1 and h2 (hyper), TLS (rustls, ring), JSON Patch and JSON Merge Patch, ",
    "history (merges, delta reads, change feed), cluster (Redis, Sentinel, Redis Cluster)"
);

#[derive(Parser)]
#[command(version, long_version = BUILT_IN, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "proxy.toml")]
    config: PathBuf,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print the routes.
    Check,
    /// Run an embedded legacy API with the proxy in front of it.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _flush_on_exit = init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber and the access log writer (see `patchgate::logging`).
fn init_logging(format: LogFormat) -> patchgate::logging::Guard {
    patchgate::logging::init(match format {
        LogFormat::Text => patchgate::logging::Format::Text,
        LogFormat::Json => patchgate::logging::Format::Json,
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo { listen }) => runtime
            .block_on(patchgate::demo::run(listen))
            .map_err(|e| anyhow::anyhow!(e)),
        None => {
            let config = Config::load(&cli.config)?;
            runtime.block_on(async {
                let proxy = Proxy::bind(&config).await?.reload_from(&cli.config);
                #[cfg(unix)]
                tokio::spawn(
                    patchgate::server::reload_on_sighup(proxy.reloader())
                        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?,
                );
                log_start(&proxy);
                proxy.run(patchgate::server::shutdown_signal()).await;
                Ok(())
            })
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if let Some(tls) = &config.server.tls {
        patchgate::server::server_config(tls)?;
    }
    patchgate::upstream::client(&config)?;
    if let Some(cluster) = &config.cluster {
        patchgate::cluster::client(cluster)?;
    }
    println!("{}: ok, {} route(s)", path.display(), config.routes.len());
    for route in &config.routes {
        println!("  {}", route.describe());
    }
    if let Some(cluster) = &config.cluster {
        println!(
            "  cluster: {} key_prefix={:?} lease={}",
            cluster.redacted(),
            cluster.key_prefix,
            patchgate::config::format_duration(cluster.lease)
        );
    }
    Ok(())
}

fn log_start(proxy: &Proxy) {
    if let Ok(addr) = proxy.local_addr() {
        tracing::info!(%addr, "patchgate listening");
    }
    if let Some(addr) = proxy.admin_addr() {
        tracing::info!(%addr, "admin listening");
    }
}
