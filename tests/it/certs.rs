//! Throwaway certificates for the TLS tests, made with the `openssl` CLI at test time: a CA,
//! leaves it signs (v3, exactly the extensions given, EC P-256 keys in PKCS#8, which Redis,
//! OpenSSL and rustls all read), valid for 2 days. Files are `NAME.pem` and `NAME.key`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The usual set in `dir`: CA `ca`, server `server` for `localhost`/`127.0.0.1`, client `client`.
pub fn make_set(dir: &Path) {
    make_ca(dir, "ca");
    make_leaf(dir, "ca", "server", "localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1");
    make_leaf(dir, "ca", "client", "pricefront-test-client", "clientAuth", "DNS:pricefront-test-client");
}

/// Runs `openssl ARGS` in `dir`, panicking with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway self-signed CA in `dir`: `NAME.pem` and its key `NAME.key`. Returns the
/// certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let config = format!(
        "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = ext\n\
         [dn]\nCN = pricefront test {name}\n\
         [ext]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n"
    );
    std::fs::write(dir.join(format!("{name}.cnf")), config).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            &format!("{name}.cnf"),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-sha256",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A leaf certificate `NAME.pem` (v3, `extended_key_usage`, `san`) with its PKCS#8 key
/// `NAME.key`, signed by the CA `CA.pem`/`CA.key` in `dir`.
pub fn make_leaf(dir: &Path, ca: &str, name: &str, common_name: &str, extended_key_usage: &str, san: &str) {
    let ext = format!(
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = {extended_key_usage}\nsubjectAltName = {san}\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={common_name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}
