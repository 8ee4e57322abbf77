//! The command line, read by hand: eight options and one subcommand did not need clap, which
//! was about 250 KiB of the binary's code (README, "A smaller binary").
//!
//! Accepted forms: `-t`, clustered short flags (`-td`), a short option's value attached or
//! next (`-cFILE`, `-c FILE`), `--long VALUE` and `--long=VALUE`, and `--` to end options.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cli {
    /// `-v`/`--version`: print the version and exit.
    pub version: bool,
    /// `-V`: print the version and the build's features and exit.
    pub build_info: bool,
    /// `-c`/`--config FILE`: the site's Lua configuration.
    pub config: Option<PathBuf>,
    /// `-t`/`--test`: check the configuration and exit.
    pub test: bool,
    /// `-p`/`--print`: print the normalised configuration and exit.
    pub print: bool,
    /// `-s SIGNAL`: signal the running server named by the config's pid_file.
    pub signal: Option<String>,
    /// `-d`/`--daemon`: detach into the background once the server runs.
    pub daemon: bool,
    /// `-h`/`--help`: print the help text and exit.
    pub help: bool,
    /// A subcommand instead of serving.
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `repl SOCKET [-e CHUNK] [--json]`: talk to a running server through its admin socket.
    Repl {
        /// The admin socket.
        socket: PathBuf,
        /// `-e`/`--eval CHUNK`: run this one chunk, print its value and exit.
        eval: Option<String>,
        /// `--json`: print values as raw JSON, one line each.
        json: bool,
    },
    /// `repl -h`: the subcommand's help text.
    ReplHelp,
}

/// Why a command line was refused; printed with the usage line, exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// An option this program does not have.
    UnknownOption(String),
    /// An option that needs a value came last.
    MissingValue(&'static str),
    /// A word where no subcommand or value was expected (maybe a config file without `-c`).
    UnexpectedArgument(String),
    /// Two options that cannot be used together.
    Conflict(&'static str, &'static str),
    /// `repl` without its socket.
    MissingSocket,
    /// An argument that is not valid UTF-8 where text is needed.
    NotUtf8(&'static str),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownOption(o) => write!(f, "unexpected argument '{o}' found"),
            CliError::MissingValue(o) => {
                write!(f, "a value is required for '{o}' but none was supplied")
            }
            CliError::UnexpectedArgument(a) => write!(f, "unexpected argument '{a}' found"),
            CliError::Conflict(a, b) => {
                write!(f, "the argument '{a}' cannot be used with '{b}'")
            }
            CliError::MissingSocket => write!(
                f,
                "the following required argument was not provided: <SOCKET>"
            ),
            CliError::NotUtf8(o) => write!(f, "the value of '{o}' is not valid UTF-8"),
        }
    }
}

/// The usage line printed after an error.
pub const USAGE: &str = "Usage: luahttpd [OPTIONS]\n       luahttpd repl [OPTIONS] <SOCKET>";

/// `luahttpd --help`.
pub const HELP: &str = "\
A lighttpd-style web server whose configuration and routing are Lua

Usage: luahttpd [OPTIONS]
       luahttpd repl [OPTIONS] <SOCKET>

Commands:
  repl  Talk to a running server through its admin socket: Lua chunks evaluated by the watcher

Options:
  -v, --version        Print the version and exit (as lighttpd and nginx)
  -V                   Print the version and the build's features and exit
  -c, --config <FILE>  The site's Lua configuration (without it: the embedded default, lua/default.lua)
  -t, --test           Check the configuration and exit: \"Syntax OK\" and 0, or every problem and 1
  -p, --print          Print the normalised configuration and exit
  -s <SIGNAL>          Signal the running server named by the config's pid_file: reload, stop (fast),
                       quit (graceful) or reopen (the logs)
  -d, --daemon         Detach into the background once the server runs (like `daemon = true`)
  -h, --help           Print help
";

/// `luahttpd repl --help`.
pub const REPL_HELP: &str = "\
Talk to a running server through its admin socket: Lua chunks evaluated by the watcher

Usage: luahttpd repl [OPTIONS] <SOCKET>

Arguments:
  <SOCKET>  The admin socket (the config's admin socket path)

Options:
  -e, --eval <CHUNK>  Run this one chunk, print its value and exit (1 if it failed)
      --json          Print values as raw JSON, one line each, for scripts
  -h, --help          Print help
";

/// One option's spelling, split off its attached value if any.
enum Token {
    /// `-x` (one char of a cluster) with the rest of the cluster, if any.
    Short(char, Option<String>),
    /// `--name` with `=value`, if any.
    Long(String, Option<String>),
    /// Anything not starting with `-` (or after `--`).
    Word(OsString),
}

/// Reads the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Cli, CliError> {
    let mut args = args.into_iter();
    let mut cli = Cli::default();
    let mut pending: Vec<Token> = Vec::new();
    let mut only_words = false;
    // Whether any option was seen: `repl` after top-level options is refused (as before).
    let mut any_option = false;
    loop {
        let token = match pending.pop() {
            Some(t) => t,
            None => match args.next() {
                Some(a) => split(a, only_words),
                None => break,
            },
        };
        match token {
            Token::Word(w) if w == "--" && !only_words => only_words = true,
            Token::Word(w) => {
                if w == "repl" && !any_option && !only_words {
                    cli.command = Some(parse_repl(args)?);
                    return Ok(cli);
                }
                return Err(CliError::UnexpectedArgument(
                    w.to_string_lossy().into_owned(),
                ));
            }
            Token::Short(c, rest) => {
                any_option = true;
                match c {
                    'c' => cli.config = Some(value(rest, &mut args, "-c <FILE>")?.into()),
                    's' => cli.signal = Some(text(value(rest, &mut args, "-s <SIGNAL>")?, "-s")?),
                    _ => {
                        let set = match c {
                            'v' => &mut cli.version,
                            'V' => &mut cli.build_info,
                            't' => &mut cli.test,
                            'p' => &mut cli.print,
                            'd' => &mut cli.daemon,
                            'h' => &mut cli.help,
                            _ => return Err(CliError::UnknownOption(format!("-{c}"))),
                        };
                        *set = true;
                        // The rest of a cluster of flags (`-td`) is read next.
                        if let Some(r) = rest {
                            pending.push(cluster(&r));
                        }
                    }
                }
            }
            Token::Long(name, inline) => {
                any_option = true;
                let flag = |set: &mut bool| match &inline {
                    Some(_) => Err(CliError::UnknownOption(format!("--{name}="))),
                    None => {
                        *set = true;
                        Ok(())
                    }
                };
                match name.as_str() {
                    "version" => flag(&mut cli.version)?,
                    "test" => flag(&mut cli.test)?,
                    "print" => flag(&mut cli.print)?,
                    "daemon" => flag(&mut cli.daemon)?,
                    "help" => flag(&mut cli.help)?,
                    "config" => {
                        cli.config = Some(value(inline, &mut args, "--config <FILE>")?.into())
                    }
                    _ => return Err(CliError::UnknownOption(format!("--{name}"))),
                }
            }
        }
    }
    if cli.test && cli.print && !cli.help {
        return Err(CliError::Conflict("--print", "--test"));
    }
    Ok(cli)
}

/// The arguments after `repl`.
fn parse_repl<I: Iterator<Item = OsString>>(mut args: I) -> Result<Command, CliError> {
    let (mut socket, mut eval, mut json) = (None, None, false);
    let mut pending: Vec<Token> = Vec::new();
    let mut only_words = false;
    loop {
        let token = match pending.pop() {
            Some(t) => t,
            None => match args.next() {
                Some(a) => split(a, only_words),
                None => break,
            },
        };
        match token {
            Token::Word(w) if w == "--" && !only_words => only_words = true,
            Token::Word(w) if socket.is_none() => socket = Some(PathBuf::from(w)),
            Token::Word(w) => {
                return Err(CliError::UnexpectedArgument(
                    w.to_string_lossy().into_owned(),
                ))
            }
            Token::Short('h', _) => return Ok(Command::ReplHelp),
            Token::Short('e', rest) => {
                eval = Some(text(value(rest, &mut args, "-e <CHUNK>")?, "-e")?)
            }
            Token::Short(c, _) => return Err(CliError::UnknownOption(format!("-{c}"))),
            Token::Long(name, inline) => match (name.as_str(), inline) {
                ("help", None) => return Ok(Command::ReplHelp),
                ("json", None) => json = true,
                ("eval", v) => eval = Some(text(value(v, &mut args, "--eval <CHUNK>")?, "--eval")?),
                (_, _) => return Err(CliError::UnknownOption(format!("--{name}"))),
            },
        }
    }
    let socket = socket.ok_or(CliError::MissingSocket)?;
    Ok(Command::Repl { socket, eval, json })
}

/// Classifies one argument; a short cluster's first option is returned, its rest attached.
fn split(a: OsString, only_words: bool) -> Token {
    if only_words {
        return Token::Word(a);
    }
    let Some(s) = a.to_str() else {
        return Token::Word(a);
    };
    if let Some(long) = s.strip_prefix("--") {
        if long.is_empty() {
            return Token::Word(a);
        }
        return match long.split_once('=') {
            Some((n, v)) => Token::Long(n.to_string(), Some(v.to_string())),
            None => Token::Long(long.to_string(), None),
        };
    }
    match s.strip_prefix('-') {
        Some(short) if !short.is_empty() => cluster(short),
        _ => Token::Word(a),
    }
}

/// `txyz` (the text after `-`): option `t`, with `xyz` as its value or the rest of the cluster.
fn cluster(s: &str) -> Token {
    let mut chars = s.chars();
    let c = chars.next().unwrap_or('-');
    let rest = chars.as_str();
    Token::Short(c, (!rest.is_empty()).then(|| rest.to_string()))
}

/// An option's value: attached (`-cFILE`, `--config=FILE`) or the next argument.
fn value<I: Iterator<Item = OsString>>(
    attached: Option<String>,
    args: &mut I,
    what: &'static str,
) -> Result<OsString, CliError> {
    match attached {
        Some(v) => Ok(v.into()),
        None => args.next().ok_or(CliError::MissingValue(what)),
    }
}

/// A value that must be text.
fn text(v: OsString, what: &'static str) -> Result<String, CliError> {
    v.into_string().map_err(|_| CliError::NotUtf8(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, CliError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn options_in_their_forms() {
        let c = p(&["-t", "-c", "a.lua"]).expect("ok");
        assert!(c.test && c.config == Some("a.lua".into()));
        let c = p(&["-tdcb.lua"]).expect("ok");
        assert!(c.test && c.daemon && c.config == Some("b.lua".into()));
        let c = p(&["--config=c.lua", "--daemon", "-s", "reload"]).expect("ok");
        assert_eq!(c.config, Some("c.lua".into()));
        assert_eq!(c.signal.as_deref(), Some("reload"));
        assert!(c.daemon);
        let c = p(&["--config", "d.lua", "-sstop"]).expect("ok");
        assert_eq!(
            (c.config, c.signal),
            (Some("d.lua".into()), Some("stop".into()))
        );
        assert!(p(&["-v"]).expect("ok").version && p(&["-V"]).expect("ok").build_info);
    }

    #[test]
    fn refusals() {
        assert_eq!(p(&["-x"]), Err(CliError::UnknownOption("-x".into())));
        assert_eq!(
            p(&["--bogus"]),
            Err(CliError::UnknownOption("--bogus".into()))
        );
        assert_eq!(p(&["-c"]), Err(CliError::MissingValue("-c <FILE>")));
        assert_eq!(
            p(&["site.lua"]),
            Err(CliError::UnexpectedArgument("site.lua".into()))
        );
        assert_eq!(
            p(&["-t", "-p"]),
            Err(CliError::Conflict("--print", "--test"))
        );
        assert_eq!(
            p(&["-t", "repl", "s"]),
            Err(CliError::UnexpectedArgument("repl".into()))
        );
        assert_eq!(
            p(&["--test=1"]),
            Err(CliError::UnknownOption("--test=".into()))
        );
        assert_eq!(p(&["repl"]), Err(CliError::MissingSocket));
    }

    #[test]
    fn repl_subcommand() {
        let c = p(&["repl", "/run/a.sock", "-e", "1+1", "--json"]).expect("ok");
        assert_eq!(
            c.command,
            Some(Command::Repl {
                socket: "/run/a.sock".into(),
                eval: Some("1+1".into()),
                json: true
            })
        );
        let c = p(&["repl", "--eval=x", "s"]).expect("ok");
        assert_eq!(
            c.command,
            Some(Command::Repl {
                socket: "s".into(),
                eval: Some("x".into()),
                json: false
            })
        );
        assert_eq!(
            p(&["repl", "-h"]).expect("ok").command,
            Some(Command::ReplHelp)
        );
        assert_eq!(
            p(&["repl", "s", "t"]),
            Err(CliError::UnexpectedArgument("t".into()))
        );
    }
}
