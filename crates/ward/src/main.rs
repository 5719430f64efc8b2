//! `ward`: the control plane, the proxies, the gateway and the operator's CLI in one binary.

mod cli;
mod client;
mod cp;
mod demo;
mod dp;
mod gateway;
mod install;
mod settings;

use clap::{Parser, Subcommand};

/// Ward: zero-trust service mesh and edge API gateway.
#[derive(Debug, Parser)]
#[command(name = "ward", version, about, propagate_version = true)]
struct Args {
    /// Address of the control plane's API (default from the config file, else http://127.0.0.1:5681).
    #[arg(long, global = true, env = "WARD_CP_ADDRESS")]
    cp_address: Option<String>,
    /// Bearer token for the API (default from the config file).
    #[arg(long, global = true, env = "WARD_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the edge API gateway (Kong-compatible declarative configuration).
    Gateway {
        #[command(subcommand)]
        command: gateway::GatewayCommand,
    },
    /// Run the control plane.
    Cp {
        #[command(subcommand)]
        command: cp::CpCommand,
    },
    /// Run the data-plane proxy.
    Dp {
        #[command(subcommand)]
        command: dp::DpCommand,
    },
    /// Create or update the resources of a YAML file (several documents allowed).
    Apply(cli::apply::ApplyArgs),
    /// Show resources.
    Get(cli::get::GetArgs),
    /// Delete a resource.
    Delete(cli::delete::DeleteArgs),
    /// Issue tokens.
    Generate {
        #[command(subcommand)]
        command: cli::generate::GenerateCommand,
    },
    /// Revoke credentials.
    Revoke {
        #[command(subcommand)]
        command: cli::revoke::RevokeCommand,
    },
    /// Rotate keys.
    Rotate {
        #[command(subcommand)]
        command: cli::rotate::RotateCommand,
    },
    /// Show what the control plane knows of a running thing.
    Inspect {
        #[command(subcommand)]
        command: cli::inspect::InspectCommand,
    },
    /// Manage the CLI's configuration file.
    Config {
        #[command(subcommand)]
        command: settings::ConfigCommand,
    },
    /// Explain whether a caller may reach a dataplane, and which policy decides.
    Explain(cli::explain::ExplainArgs),
    /// Run the marketplace example on this machine and tour its permissions.
    Demo(demo::DemoArgs),
    /// One of the demo's services (users, items or invoices): a small JSON application.
    DemoApp(demo::app::DemoAppArgs),
    /// Set this host up for the mesh (the transparent proxy's iptables rules).
    Install {
        #[command(subcommand)]
        command: install::InstallCommand,
    },
    /// Remove what `ward install` set up.
    Uninstall {
        #[command(subcommand)]
        command: install::UninstallCommand,
    },
    /// Print the version of the CLI and of the control plane it points at.
    Version,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The demo prints its own progress; its components only speak up about problems.
    let default_level = if matches!(args.command, Command::Demo(_)) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARD_LOG").unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(dispatch(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(args: Args) -> anyhow::Result<()> {
    let connect = || settings::Connection::resolve(args.cp_address.clone(), args.api_token.clone());
    match args.command {
        Command::Cp { command } => cp::run(command).await,
        Command::Dp { command } => dp::run(args.cp_address.clone(), command).await,
        Command::Gateway { command } => gateway::run(args.cp_address.clone(), command).await,
        Command::Apply(a) => cli::apply::run(&client::Client::new(connect()?)?, a).await,
        Command::Get(a) => cli::get::run(&client::Client::new(connect()?)?, a).await,
        Command::Delete(a) => cli::delete::run(&client::Client::new(connect()?)?, a).await,
        Command::Generate { command } => cli::generate::run(&client::Client::new(connect()?)?, command).await,
        Command::Revoke { command } => cli::revoke::run(&client::Client::new(connect()?)?, command).await,
        Command::Rotate { command } => cli::rotate::run(&client::Client::new(connect()?)?, command).await,
        Command::Inspect { command } => cli::inspect::run(&client::Client::new(connect()?)?, command).await,
        Command::Explain(a) => cli::explain::run(&client::Client::new(connect()?)?, a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::DemoApp(a) => demo::app::run(a).await,
        Command::Install { command } => install::install(command),
        Command::Uninstall { command } => install::uninstall(command),
        Command::Config { command } => settings::run(command),
        Command::Version => cli::version(connect().ok()).await,
    }
}
