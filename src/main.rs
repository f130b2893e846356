//! The `attune-sensor` command line: the service itself and the tools around it.

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

use attune_sensor::client::{AdminClient, render_cluster, render_status};
use attune_sensor::config::{LogFormat, Settings};
use attune_sensor::outbox_cli::{self, RetryTarget};
use attune_sensor::retention::{self, RetentionPolicy};
use attune_sensor::rule_test::{self, RuleSource};
use attune_sensor::service::Service;
use attune_sensor::{packs, store};

/// Exit code for configuration and usage errors.
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "attune-sensor",
    version,
    about = "The sensor service of the Attune automation platform"
)]
struct Cli {
    /// Configuration file (YAML) on top of the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Admin API base URL for client commands (default: http://<admin.bind>).
    #[arg(long, global = true, value_name = "URL")]
    admin: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default command).
    Run,
    /// Create or update the database schema, then exit.
    Migrate,
    /// Manage packs.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Show every sensor's status, the pipeline actors and the outbox.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Control one sensor of a running service.
    Sensor {
        #[command(subcommand)]
        command: SensorCommand,
    },
    /// Emit events.
    Event {
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Work with rules.
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Delete what retention no longer keeps (as the running service does every
    /// retention.interval), once, and print what went per table.
    Prune {
        /// Count what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Outbox rows the broker would not take (read from and written to the database).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List parked rows with their last error, oldest first.
    Parked,
    /// Put parked rows back into the publish order (attempts reset).
    Retry {
        /// The rows' ids, as `outbox parked` lists them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every parked row.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RuleCommand {
    /// Evaluate a rule against a payload. Exit 0 when it matches, 1 when it does not, 2
    /// when the rule or the payload is invalid.
    Test {
        /// The rule's ref, read from the configured database.
        #[arg(required_unless_present = "rule", conflicts_with = "rule")]
        rule_ref: Option<String>,
        /// A rule YAML file in the pack format instead of a stored rule.
        #[arg(long, value_name = "FILE.yaml")]
        rule: Option<PathBuf>,
        /// The event payload: JSON, or @FILE to read it from a file.
        #[arg(long)]
        payload: String,
        /// Show how every condition evaluated.
        #[arg(long)]
        explain: bool,
        /// Print the result and the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PackCommand {
    /// Validate a pack directory and upsert it into the configured database.
    Load { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum SensorCommand {
    Restart { sensor_ref: String },
    Stop { sensor_ref: String },
    Start { sensor_ref: String },
}

#[derive(Debug, Subcommand)]
enum EventCommand {
    /// Emit a system event for a trigger; prints the event id and the enforcements.
    Emit {
        trigger_ref: String,
        /// The payload as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
    },
}

fn main() -> ExitCode {
    attune_sensor::malloc_arenas::limit_malloc_arenas();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("attune-sensor: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("attune-sensor: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(dispatch(cli, settings));
    // Tasks still blocked (a file read, a query on a hung connection) must not hold the
    // exit past the shutdown deadline.
    runtime.shutdown_timeout(RUNTIME_STOP);
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("attune-sensor: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// How long the async runtime gets to stop after the service has shut down.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(300);

/// The error and its causes on one line. Several errors already print their source in
/// their own message; a cause whose text is already shown is skipped rather than
/// repeated (which `{:#}` would do).
fn describe(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn dispatch(cli: Cli, settings: Settings) -> anyhow::Result<ExitCode> {
    let admin_base = cli
        .admin
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.admin_addr()));
    let client = || AdminClient::new(&admin_base, settings.admin_token());
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&settings).await,
        Command::Migrate => {
            store::migrate(&settings.database.url)
                .await
                .context("migration failed")?;
            println!("database schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack {
            command: PackCommand::Load { dir },
        } => {
            let store = store::open_with(&settings.database.url, settings.store_options())
                .await
                .context("cannot open the database")?;
            match packs::install_pack(store.as_ref(), &dir).await {
                Ok(summary) => {
                    println!(
                        "pack {}: {} created, {} updated, {} unchanged",
                        dir.display(),
                        summary.created,
                        summary.updated,
                        summary.unchanged
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("attune-sensor: pack refused: {error}");
                    Ok(ExitCode::from(EXIT_CONFIG))
                }
            }
        }
        Command::Status { json } => {
            let client = client();
            let mut status = client.get("/status").await?;
            // A service older than GET /cluster still shows its own status.
            let cluster = client.get("/cluster").await.ok();
            if json {
                if let Some(object) = status.as_object_mut() {
                    object.insert("cluster".to_owned(), cluster.unwrap_or_default());
                }
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
                if let Some(cluster) = &cluster {
                    print!("{}", render_cluster(cluster));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sensor { command } => {
            let (action, sensor_ref) = match command {
                SensorCommand::Restart { sensor_ref } => ("restart", sensor_ref),
                SensorCommand::Stop { sensor_ref } => ("stop", sensor_ref),
                SensorCommand::Start { sensor_ref } => ("start", sensor_ref),
            };
            client()
                .post(&format!("/sensors/{sensor_ref}/{action}"), None)
                .await?;
            println!("sensor {sensor_ref}: {action} done");
            Ok(ExitCode::SUCCESS)
        }
        Command::Rule { command } => test_rule(&settings, command).await,
        Command::Prune { dry_run } => {
            let store = store::open_with(&settings.database.url, settings.store_options())
                .await
                .context("cannot open the database")?;
            let policy = RetentionPolicy::from_settings(&settings);
            let now = chrono::Utc::now();
            let count = if dry_run {
                store.count_prunable(policy.cutoffs(now)).await?
            } else {
                retention::prune_all(store.as_ref(), &policy, now).await?
            };
            print!("{}", retention::render(&count, dry_run));
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { command } => {
            let store = store::open_with(&settings.database.url, settings.store_options())
                .await
                .context("cannot open the database")?;
            let output = match command {
                OutboxCommand::Parked => {
                    let rows = store.parked_outbox(outbox_cli::LIST_LIMIT).await?;
                    outbox_cli::render_parked(&rows)
                }
                OutboxCommand::Retry { ids, all } => {
                    let target = if all {
                        RetryTarget::All
                    } else {
                        RetryTarget::Rows(ids)
                    };
                    outbox_cli::retry(store.as_ref(), &target).await?
                }
            };
            print!("{output}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Event {
            command:
                EventCommand::Emit {
                    trigger_ref,
                    payload,
                },
        } => {
            let payload: Value = match serde_json::from_str(&payload) {
                Ok(payload) => payload,
                Err(error) => {
                    eprintln!("attune-sensor: --payload is not valid JSON: {error}");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            };
            let body = serde_json::json!({"trigger_ref": trigger_ref, "payload": payload});
            let outcome = client().post("/events", Some(&body)).await?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn test_rule(settings: &Settings, command: RuleCommand) -> anyhow::Result<ExitCode> {
    let RuleCommand::Test {
        rule_ref,
        rule,
        payload,
        explain,
        json,
    } = command;
    let source = match (rule, rule_ref) {
        (Some(file), _) => RuleSource::File(file),
        (None, Some(rule_ref)) => RuleSource::Stored(rule_ref),
        (None, None) => unreachable!("clap requires a rule ref or --rule"),
    };
    let verdict = async {
        let payload = rule_test::parse_payload(&payload)?;
        let (rule, window) = match source {
            RuleSource::File(file) => (rule_test::rule_from_file(&file)?, None),
            RuleSource::Stored(rule_ref) => {
                let store = store::open_with(&settings.database.url, settings.store_options())
                    .await
                    .map_err(|e| {
                        rule_test::RuleTestError::Rule(format!("cannot open the database: {e}"))
                    })?;
                let rule = rule_test::rule_from_store(store.as_ref(), &rule_ref).await?;
                let window = match rule_test::group_of(&rule, &payload)? {
                    Some(group) => Some(store.throttle_window(&rule.r#ref, &group).await.map_err(
                        |e| {
                            rule_test::RuleTestError::Rule(format!(
                                "cannot read the throttle window of rule {}: {e}",
                                rule.r#ref
                            ))
                        },
                    )?),
                    None => None,
                };
                (rule, window)
            }
        };
        rule_test::evaluate(&rule, payload, window, explain, json)
    }
    .await;
    match verdict {
        Ok(verdict) => {
            print!("{}", verdict.output);
            Ok(ExitCode::from(verdict.code))
        }
        Err(error) => {
            eprintln!("attune-sensor: {error}");
            Ok(ExitCode::from(rule_test::INVALID))
        }
    }
}

async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let service = Service::start(settings).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    service.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
