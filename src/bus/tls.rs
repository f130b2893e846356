//! TLS to RabbitMQ: the files named by `mq.tls.*`, read and checked when the bus is opened
//! so a wrong path or a file that is no certificate stops the start, naming the setting.
//! The handshake itself (rustls, with the system's CAs plus `ca_file`, host name always
//! verified) happens on every connect.

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use std::path::Path;

use super::OpenError;

/// The `mq.tls` settings; empty strings are unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    pub ca_file: &'a str,
    pub cert_file: &'a str,
    pub key_file: &'a str,
}

impl TlsFiles<'_> {
    pub fn load(&self) -> Result<OwnedTLSConfig, OpenError> {
        let cert_chain = match self.ca_file {
            "" => None,
            path => Some(read_pem("mq.tls.ca_file", path, "CERTIFICATE")?),
        };
        let identity = match (self.cert_file, self.key_file) {
            ("", "") => None,
            (cert, key) => Some(OwnedIdentity::PKCS8 {
                pem: read_pem("mq.tls.cert_file", cert, "CERTIFICATE")?.into_bytes(),
                key: read_pem("mq.tls.key_file", key, "PRIVATE KEY")?.into_bytes(),
            }),
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

/// Reads a PEM file and checks it holds at least one block of `label` (`CERTIFICATE`,
/// `PRIVATE KEY`): rustls skips what it cannot parse, which would otherwise surface only
/// as an unknown issuer at every connect.
fn read_pem(key: &'static str, path: &str, label: &str) -> Result<String, OpenError> {
    let refuse = |reason: String| OpenError::TlsFile {
        key,
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(Path::new(path)).map_err(|e| refuse(e.to_string()))?;
    if !text.contains(&format!("-----BEGIN {label}-----")) {
        return Err(refuse(format!("no PEM '{label}' block in the file")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_and_checked_naming_the_setting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello").expect("write");
        let ca = ca.to_string_lossy().into_owned();
        let loaded = TlsFiles {
            ca_file: &ca,
            ..TlsFiles::default()
        }
        .load()
        .expect("loads");
        assert!(loaded.cert_chain.is_some() && loaded.identity.is_none());

        let missing = dir
            .path()
            .join("missing.pem")
            .to_string_lossy()
            .into_owned();
        let error = TlsFiles {
            ca_file: &missing,
            ..TlsFiles::default()
        }
        .load()
        .expect_err("missing file")
        .to_string();
        assert!(
            error.contains("mq.tls.ca_file") && error.contains(&missing),
            "{error}"
        );

        let not_pem = not_pem.to_string_lossy().into_owned();
        let error = TlsFiles {
            cert_file: &ca,
            key_file: &not_pem,
            ..TlsFiles::default()
        }
        .load()
        .expect_err("no key")
        .to_string();
        assert!(
            error.contains("mq.tls.key_file") && error.contains("PRIVATE KEY"),
            "{error}"
        );
    }
}
