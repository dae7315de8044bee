//! `coapgate`: the CoAP integration platform's one binary.
//!
//! Modules, in boot order of `coapgate serve`:
//! - [`config`]: settings from the environment and an optional TOML file.
//! - [`serve`]: start-up — storage, admin user, routing table, script pool, writer, endpoints.
//! - [`demo`]: the seed tutorial's converter and integration for `serve --demo`.
//! - [`registry`]: the live routing table (routing key → integration and converter script).
//! - [`remote_link`]: the platform's gRPC endpoint for remote integrations, and their status.
//! - [`remote`]: `coapgate remote`, one integration run near its devices with a durable outbox.
//! - [`remote_proto`]: the remote protocol's messages and their conversions.
//! - [`coap_endpoint`]: the UDP message layer and the hand-off of uplinks to the pipeline.
//! - [`pipeline`]: one uplink from script result to reply, with its debug events.
//! - [`events`]: debug, lifecycle, statistics and error events, recorded in batches.
//! - [`metrics`]: `GET /metrics` in Prometheus format.
//! - [`uplink`]: converter output → storage record, with ThingsBoard's validation messages.
//! - [`writer`]: the group-commit writer thread.
//! - [`live`]: committed changes handed to the WebSocket sessions watching their entities.
//! - [`api`]: the REST API (ThingsBoard's paths and JSON).
//! - [`http_server`]: the REST API's HTTP(S) server: accept loop, connection cap, timeouts, TLS.
//! - [`console`]: the web console, embedded static files served at `/`.
//! - [`decode`]: `coapgate decode`, the offline converter runner.
//! - [`check`]: `coapgate check`, verifies a data directory.
//! - [`migrate`]: `coapgate migrate`, a stopped server's SQLite data directory into PostgreSQL.
//! - [`bench`]: `coapgate bench`, the CoAP load generator.
//! - [`bench_ws`]: `coapgate bench-ws`, WebSocket subscribers of one device under uplinks.
//! - [`reset_password`]: `coapgate reset-password`, a user's password from the command line.
//! - [`private_files`]: umask 077 and 0600 data files (secrets live in the databases).

mod api;
mod bench;
mod bench_dtls;
mod bench_ws;
mod check;
mod coap_endpoint;
mod config;
mod config_sync;
mod console;
mod decode;
mod dtls_endpoint;
mod demo;
mod events;
mod histogram;
mod live;
mod live_relay;
mod http_server;
mod metrics;
mod migrate;
mod pipeline;
mod private_files;
mod registry;
mod remote;
mod remote_link;
mod remote_proto;
mod reset_password;
mod serve;
mod uplink;
mod udp_io;
mod writer;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "coapgate", version, about = "CoAP integration platform compatible with ThingsBoard's CoAP integration")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: CoAP endpoint, REST API, embedded database.
    Serve {
        /// Also create the seed tutorial's converter and integration, and print the command
        /// that sends the seed uplink.
        #[arg(long)]
        demo: bool,
        /// TOML configuration file; its values win over environment variables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (database, secrets); overrides COAPGATE_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start even when a write-ahead log is damaged: what SQLite cannot replay is dropped
        /// and reported. Without it such a data directory stops start-up with a report.
        #[arg(long, env = "COAPGATE_SALVAGE")]
        salvage: bool,
    },
    /// Verify a data directory (stop the server first): each database file's write-ahead log
    /// and `PRAGMA integrity_check`. Exits non-zero when something is wrong.
    Check {
        /// TOML configuration file, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory; overrides COAPGATE_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run one integration near its devices and send what its converter produces to the
    /// platform (`serve` with INTEGRATIONS_RPC_ENABLED): INTEGRATION_ROUTING_KEY,
    /// INTEGRATION_SECRET, RPC_HOST, RPC_PORT, RPC_SSL_ENABLED, RPC_SSL_CERT, plus the COAP_*
    /// settings. Uplinks are answered 2.01 once durable in a local outbox.
    Remote {
        /// The platform's remote-integration endpoint: grpc://HOST:PORT, or grpcs://HOST:PORT
        /// for TLS (HOST alone: port 9090); overrides RPC_HOST, RPC_PORT and RPC_SSL_ENABLED.
        #[arg(long)]
        platform: Option<String>,
        /// The integration's key; overrides INTEGRATION_ROUTING_KEY.
        #[arg(long)]
        routing_key: Option<String>,
        /// The integration's secret; overrides INTEGRATION_SECRET (which keeps it out of the
        /// process list).
        #[arg(long)]
        secret: Option<String>,
        /// TOML configuration file; its values win over environment variables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (the outbox); overrides COAPGATE_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy a stopped server's SQLite data directory into PostgreSQL (every entity, point,
    /// attribute, event and setting, with its ids), then compare the row counts of both; run
    /// it again after an interruption and it continues where it stopped.
    Migrate(migrate::MigrateArgs),
    /// Print a configuration file with every setting, its default and what it does.
    Config,
    /// Run a converter script on one payload, offline, with the server's engine.
    Decode(decode::DecodeArgs),
    /// Load-test a CoAP endpoint with simulated devices and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Measure WebSocket subscribers of one device: update latency at a fixed uplink rate, and
    /// ingest throughput with and without them.
    BenchWs(bench_ws::BenchWsArgs),
    /// Set a user's password (default: the admin's); every token issued before stops working.
    ResetPassword(reset_password::ResetPasswordArgs),
    /// Print every REST route that needs a token, with who may call it: `tenant-admin` (customer
    /// users get 403) or `any-user` (customer users reach only their customer's entities).
    Routes,
}

// Uplinks are allocated on the receive thread and freed on the script, writer and sync threads;
// glibc malloc spent more CPU on those cross-thread frees than the SQLite inserts (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "remote") {
        remote::small_pages();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    private_files::restrict_new_files();
    let result = match cli.command {
        Command::Serve { demo, config, data_dir, salvage } => config::Config::load(config.as_deref(), data_dir.as_deref())
            .and_then(|config| {
                private_files::tighten(&config);
                serve::run(config, demo, serve::StartOptions { salvage })
            }),
        Command::Remote { platform, routing_key, secret, config, data_dir } => config::Config::load(config.as_deref(), data_dir.as_deref())
            .and_then(|mut config| {
                config.remote.apply_flags(platform.as_deref(), routing_key, secret)?;
                remote::run(config)
            }),
        Command::Check { config, data_dir } => {
            config::Config::load(config.as_deref(), data_dir.as_deref()).and_then(|config| check::run(&config))
        }
        Command::Config => {
            print!("{}", config::commented_example());
            Ok(())
        }
        Command::Migrate(args) => migrate::run(args),
        Command::Decode(args) => decode::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchWs(args) => bench_ws::run(args),
        Command::ResetPassword(args) => reset_password::run(args),
        Command::Routes => {
            for (method, path, rule) in api::route_table() {
                println!("{:<7}{path:<90}{}", method.as_str(), rule.name());
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the setting or input at fault and the cause.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
