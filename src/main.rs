//! The `luahttpd` command line: serve, check (`-t`) or print (`-p`) a configuration.

use clap::Parser;
use luahttpd::config::{self, Loaded};
use luahttpd::watcher::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// A lighttpd-style web server whose configuration and routing are Lua.
#[derive(Debug, Parser)]
#[command(name = "luahttpd", version, about)]
struct Cli {
    /// The site's Lua configuration (without it: the embedded default, lua/default.lua).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: "Syntax OK" and 0, or every problem and 1.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Print the normalised configuration and exit.
    #[arg(short = 'p', long = "print", conflicts_with = "test")]
    print: bool,
    /// Detach into the background once the server runs (like `daemon = true`).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    luahttpd::log::init_tracing();
    let loaded = match load(&cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if cli.test {
        println!("Syntax OK");
        return ExitCode::SUCCESS;
    }
    if cli.print {
        print!("{}", config::print(&loaded.config));
        return ExitCode::SUCCESS;
    }
    let code = watcher::serve(loaded, RunOptions { daemon: cli.daemon });
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn load(cli: &Cli) -> Result<Loaded, ExitCode> {
    let result = match &cli.config {
        Some(path) => config::load_file(path),
        None => config::load_default(),
    };
    result.map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}
