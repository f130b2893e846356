//! Secrets handed over as files, the way container platforms mount them
//! (`/run/secrets/...`): the file's content, with one trailing newline removed, is the
//! value.

use std::path::Path;

/// Reads a secret file. The error says why (missing, unreadable, not UTF-8, empty) but
/// never shows any of the content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_stripped_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("secret");
        for (content, value) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            (" spaced \n\n", " spaced \n"),
        ] {
            std::fs::write(&file, content).expect("write");
            assert_eq!(read_secret_file(&file).as_deref(), Ok(value));
        }
        std::fs::write(&file, "\n").expect("write");
        assert_eq!(read_secret_file(&file), Err("the file is empty".to_owned()));
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }
}
