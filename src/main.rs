//! The `luahttpd` command line: serve, check (`-t`) or print (`-p`) a configuration, or talk
//! to a running server's admin socket (`repl`).

use clap::{Parser, Subcommand};
use luahttpd::admin::client::{self as repl, ReplOptions};
use luahttpd::config::{self, Loaded};
use luahttpd::watcher::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// A lighttpd-style web server whose configuration and routing are Lua.
#[derive(Debug, Parser)]
#[command(
    name = "luahttpd",
    version,
    about,
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Print the version and exit (as lighttpd and nginx).
    #[arg(short = 'v', long = "version")]
    version: bool,
    /// Print the version and the build's features and exit.
    #[arg(short = 'V')]
    build_info: bool,
    /// The site's Lua configuration (without it: the embedded default, lua/default.lua).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: "Syntax OK" and 0, or every problem and 1.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Print the normalised configuration and exit.
    #[arg(short = 'p', long = "print", conflicts_with = "test")]
    print: bool,
    /// Signal the running server named by the config's pid_file: reload, stop (fast), quit
    /// (graceful) or reopen (the logs).
    #[arg(short = 's', value_name = "SIGNAL")]
    signal: Option<String>,
    /// Detach into the background once the server runs (like `daemon = true`).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// A subcommand instead of serving.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running server through its admin socket: Lua chunks evaluated by the watcher.
    Repl {
        /// The admin socket (the config's admin socket path).
        #[arg(value_name = "SOCKET")]
        socket: PathBuf,
        /// Run this one chunk, print its value and exit (1 if it failed).
        #[arg(short = 'e', long = "eval", value_name = "CHUNK")]
        eval: Option<String>,
        /// Print values as raw JSON, one line each, for scripts.
        #[arg(long = "json")]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if let Some(file) = config_without_c(&e) {
                eprintln!("luahttpd: unexpected argument '{file}': did you mean -c {file}?");
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    if let Some(Command::Repl { socket, eval, json }) = cli.command {
        let code = repl::run(&ReplOptions { socket, eval, json });
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if cli.version || cli.build_info {
        println!("luahttpd {}", env!("CARGO_PKG_VERSION"));
        if cli.build_info {
            let editor = if cfg!(feature = "repl") {
                " (line editor)"
            } else {
                " (no line editor)"
            };
            let tls = if cfg!(feature = "ring") {
                "tls (rustls, ring)"
            } else if cfg!(feature = "aws-lc-rs") {
                "tls (rustls, aws-lc-rs)"
            } else {
                "no tls"
            };
            let codings = if cfg!(feature = "zstd") {
                "zstd, gzip"
            } else {
                "gzip"
            };
            println!("features: lua 5.4 (vendored), epoll, signalfd, sendfile, fastcgi, cgi, reverse proxy (http/1.1 upstreams), {tls}, compression ({codings}), admin repl{editor}, privileges (user/group/chroot), status page, PROXY protocol");
            println!(
                "profile: {}",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            );
        }
        return ExitCode::SUCCESS;
    }
    luahttpd::log::init_tracing();
    let loaded = match load(&cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Some(action) = &cli.signal {
        return match watcher::control::signal(&loaded.config, action) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("luahttpd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // A second start on the same config: said before anything is bound.
    if let Some(p) = &loaded.config.pid_file {
        if let watcher::control::Running::Yes(pid) = watcher::control::running(p) {
            if !cli.test && !cli.print && pid != std::process::id() as i32 {
                eprintln!(
                    "luahttpd: already running (pid {pid}, from {})",
                    p.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    // Checked here for -t and for a start alike: -d is not part of the config.
    if let Some(why) = cli
        .daemon
        .then(|| config::daemon_problem(&loaded.config))
        .flatten()
    {
        eprintln!("luahttpd: --daemon: {why}");
        return ExitCode::FAILURE;
    }
    if cli.test {
        println!("Syntax OK");
        return ExitCode::SUCCESS;
    }
    if cli.print {
        print!(
            "{}{}",
            config::print(&loaded.config),
            config::print_lua_hooks(&loaded.lua)
        );
        return ExitCode::SUCCESS;
    }
    let code = watcher::serve(loaded, RunOptions { daemon: cli.daemon });
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `luahttpd site.lua`: a config file given where a subcommand was expected.
fn config_without_c(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::InvalidSubcommand | ErrorKind::UnknownArgument
    ) {
        return None;
    }
    let mut args = std::env::args().skip(1);
    let mut stray = None;
    while let Some(a) = args.next() {
        if matches!(a.as_str(), "-c" | "--config" | "-s") {
            args.next();
        } else if !a.starts_with('-') && stray.is_none() {
            stray = Some(a);
        }
    }
    stray.filter(|a| a.ends_with(".lua") || std::path::Path::new(a).is_file())
}

fn load(cli: &Cli) -> Result<Loaded, ExitCode> {
    let result = match &cli.config {
        Some(path) => config::load_file(path),
        None => config::load_default(),
    };
    let loaded = result.map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })?;
    // Certificates about to expire: said at every check and start, not an error.
    for w in &loaded.config.tls.warnings {
        eprintln!("{w}");
    }
    Ok(loaded)
}
