//! Reading a text input (configuration, rule file, detections, password file) with a size limit:
//! a path that names a device, a directory or a huge file is refused before it is read, and no
//! error quotes the file's bytes (a wrong path must not print another file's contents).

use std::io::Read;
use std::path::Path;

use crate::error::{EngineError, Result};

/// What a configuration or rule file may weigh.
pub const SMALL: u64 = 1 << 20;

/// Reads the regular file at `path` as UTF-8 text of at most `limit` bytes; `what` names it in
/// errors ("rule file", "configuration").
pub fn read(path: &Path, what: &str, limit: u64) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(EngineError::user(
            format!("the {what} {} is not a regular file", path.display()),
            format!("give the path of a {what}"),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| EngineError::io("opening", path, e))?;
    // `take` as well as the size check: the file may grow between the two.
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| EngineError::io("reading", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(EngineError::user(
            format!("the {what} {} is larger than {} KiB", path.display(), limit / 1024),
            format!("give a {what} of at most {} KiB", limit / 1024),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        EngineError::user(
            format!(
                "the {what} {} is not UTF-8 text (byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            format!("give a text {what}, saved as UTF-8"),
        )
    })?;
    if let Some(at) = text.find(|c: char| c.is_control() && !c.is_whitespace()) {
        return Err(EngineError::user(
            format!(
                "the {what} {} holds a control character (byte {at}): it is not a text file",
                path.display()
            ),
            format!("give a text {what}"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_binary_and_oversized_files_are_refused_without_quoting_them() {
        let dir = std::env::temp_dir().join(format!("vigil-text-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read(Path::new("/dev/zero"), "rule file", SMALL).unwrap_err().to_string();
        assert!(e.contains("/dev/zero is not a regular file"), "{e}");
        let big = dir.join("big.sql");
        std::fs::write(&big, "SELECT secretword ".repeat(100)).unwrap();
        let e = read(&big, "rule file", 1024).unwrap_err().to_string();
        assert!(e.contains("larger than 1 KiB") && !e.contains("secretword"), "{e}");
        let bin = dir.join("bin.sql");
        std::fs::write(&bin, b"secretword\x00\x01\x02").unwrap();
        let e = read(&bin, "rule file", SMALL).unwrap_err().to_string();
        assert!(e.contains("control character (byte 10)") && !e.contains("secretword"), "{e}");
        let ok = dir.join("ok.sql");
        std::fs::write(&ok, "SELECT 1;\n\tSELECT 2").unwrap();
        assert_eq!(read(&ok, "rule file", SMALL).unwrap(), "SELECT 1;\n\tSELECT 2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
