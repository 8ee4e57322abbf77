//! TODO
use super::Config;
/// Prints the normalised config as Lua that `-c` would accept again.
pub fn print(config: &Config) -> String { let _ = config; todo!() }
