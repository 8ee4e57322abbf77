//! The `luahttpd` command line: serve, check (`-t`) or print (`-p`) a configuration, or talk
//! to a running server's admin socket (`repl`).

mod cli;

use cli::{Cli, Command};
use luahttpd::admin::client::{self as repl, ReplOptions};
use luahttpd::config::{self, Loaded};
use luahttpd::watcher::{self, RunOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            if let Some(file) = config_without_c(&e) {
                eprintln!("luahttpd: unexpected argument '{file}': did you mean -c {file}?");
            } else {
                eprintln!(
                    "error: {e}\n\n{}\n\nFor more information, try '--help'.",
                    cli::USAGE
                );
            }
            return ExitCode::from(2);
        }
    };
    if cli.help {
        print!("{}", cli::HELP);
        return ExitCode::SUCCESS;
    }
    if let Some(Command::ReplHelp) = cli.command {
        print!("{}", cli::REPL_HELP);
        return ExitCode::SUCCESS;
    }
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
            let codings = if cfg!(feature = "zstd-thin") {
                "zstd-thin, gzip"
            } else if cfg!(feature = "zstd") {
                "zstd, gzip"
            } else {
                "gzip"
            };
            println!("features: lua 5.4 (vendored), epoll, signalfd, sendfile, fastcgi, cgi, reverse proxy (http/1.1 upstreams), {tls}, compression ({codings}), admin repl{editor}, privileges (user/group/chroot), status page, PROXY protocol");
            println!("profile: {}", env!("LUAHTTPD_PROFILE"));
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

/// `luahttpd site.lua`: a config file given where an option was expected.
fn config_without_c(e: &cli::CliError) -> Option<String> {
    let cli::CliError::UnexpectedArgument(stray) = e else {
        return None;
    };
    Some(stray)
        .filter(|a| a.ends_with(".lua") || std::path::Path::new(a).is_file())
        .cloned()
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
