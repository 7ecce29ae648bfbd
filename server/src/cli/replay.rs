//! `opush replay export|run|show`: the command line of `opush-replay`.
//! `export` reads the configured store (either backend) and writes a
//! bundle; `run` and `show` read only the bundle file and need no service.
//! Replay logic lives in `replay/`, not here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opush_replay::{export, run as replay_run, show, Bundle};
use opush_storage::Store;

/// `opush replay`.
#[derive(Debug, Parser)]
#[command(name = "opush replay")]
struct ReplayCli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Write a device's recorded session to a bundle file.
    Export {
        /// The user (`user@domain`).
        #[arg(long)]
        user: String,
        /// The device id.
        #[arg(long)]
        device: String,
        /// First request to include (Unix milliseconds).
        #[arg(long)]
        since: Option<u64>,
        /// Last request to include (Unix milliseconds).
        #[arg(long)]
        until: Option<u64>,
        /// Output file.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Configuration file (its `[storage]` section is read).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Re-run every decision of a bundle; exit 0 when all match.
    Run {
        /// The bundle.
        file: PathBuf,
    },
    /// Print a bundle's transcript.
    Show {
        /// The bundle.
        file: PathBuf,
        /// Only this request (from 1).
        #[arg(long)]
        request: Option<usize>,
    },
}

/// Exit code of `replay run` when the replay diverges.
const EXIT_DIVERGED: u8 = 1;
/// Exit code when the bundle cannot be read or written.
const EXIT_BAD_BUNDLE: u8 = 2;

/// Runs `opush replay <args>`.
pub fn run(args: Vec<String>) -> ExitCode {
    let cli =
        match ReplayCli::try_parse_from(std::iter::once("opush replay".to_owned()).chain(args)) {
            Ok(c) => c,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(EXIT_BAD_BUNDLE);
            }
        };
    match cli.action {
        Action::Export {
            user,
            device,
            since,
            until,
            output,
            config,
        } => run_export(&user, &device, since, until, &output, config.as_deref()),
        Action::Run { file } => match read(&file) {
            Err(code) => code,
            Ok(bundle) => match replay_run(&bundle) {
                Err(e) => {
                    eprintln!("opush replay run: {e}");
                    ExitCode::from(EXIT_BAD_BUNDLE)
                }
                Ok(Err(div)) => {
                    eprintln!("{div}");
                    ExitCode::from(EXIT_DIVERGED)
                }
                Ok(Ok(report)) => {
                    println!(
                        "ok: {} requests, {} decisions re-run, {} events, final state matches",
                        report.requests, report.decisions, report.events
                    );
                    if report.unchecked > 0 {
                        println!(
                            "({} decisions not re-run: decided on a state before the bundle's \
                             start; export from earlier to check them)",
                            report.unchecked
                        );
                    }
                    ExitCode::SUCCESS
                }
            },
        },
        Action::Show { file, request } => match read(&file) {
            Err(code) => code,
            Ok(bundle) => match show(&bundle, request) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("opush replay show: {e}");
                    ExitCode::from(EXIT_BAD_BUNDLE)
                }
            },
        },
    }
}

fn read(file: &std::path::Path) -> Result<Bundle, ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("opush replay: cannot read {}: {e}", file.display());
        ExitCode::from(EXIT_BAD_BUNDLE)
    })?;
    Bundle::from_json(&text).map_err(|e| {
        eprintln!("opush replay: {}: {e}", file.display());
        ExitCode::from(EXIT_BAD_BUNDLE)
    })
}

fn run_export(
    user: &str,
    device: &str,
    since: Option<u64>,
    until: Option<u64>,
    output: &std::path::Path,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opush replay export: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = runtime.block_on(async {
        let storage = super::schema::storage_config(config)?;
        let store = Store::open(&storage).await.map_err(|e| e.to_string())?;
        let bundle = export(&store, user, device, since, until)
            .await
            .map_err(|e| e.to_string())?;
        std::fs::write(output, bundle.to_json()).map_err(|e| e.to_string())?;
        Ok::<usize, String>(bundle.events.len())
    });
    match done {
        Ok(n) => {
            println!("{n} events written to {}", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opush replay export: {e}");
            ExitCode::from(EXIT_BAD_BUNDLE)
        }
    }
}
