//! TODO
use super::{ConfigErrors, Loaded};
use std::path::Path;
pub(super) fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> { let _ = path; todo!() }
pub(super) fn load_source(src: &str, name: &Path) -> Result<Loaded, ConfigErrors> { let _ = (src, name); todo!() }
