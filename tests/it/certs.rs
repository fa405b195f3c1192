//! Throwaway certificates for the TLS tests, made with `rcgen` at test time: a CA, and leaves
//! it signs (v3, exactly the extensions given, EC P-256 keys in PKCS#8, which Redis, OpenSSL
//! and rustls all read). Files are `NAME.pem` and `NAME.key`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// The usual set in `dir`: CA `ca`, server `server` for `localhost`/`127.0.0.1`, client `client`.
pub fn make_set(dir: &Path) {
    make_ca(dir, "ca");
    make_leaf(dir, "ca", "server", "localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1");
    make_leaf(dir, "ca", "client", "pricefront-test-client", "clientAuth", "DNS:pricefront-test-client");
}

/// A CA's parameters, from its name alone: what signs a leaf is the CA's name and key, so a
/// CA written earlier is found again from its name and its key file.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&format!("pricefront test {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn write(dir: &Path, name: &str, certificate: &rcgen::Certificate, key: &KeyPair) {
    std::fs::write(dir.join(format!("{name}.pem")), certificate.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A throwaway self-signed CA in `dir`: `NAME.pem` and its key `NAME.key`. Returns the
/// certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let certificate = ca_params(name).self_signed(&key).unwrap();
    write(dir, name, &certificate, &key);
    dir.join(format!("{name}.pem"))
}

/// A leaf certificate `NAME.pem` (`extended_key_usage`: `serverAuth` or `clientAuth`; `san`:
/// `DNS:…` and `IP:…`, comma-separated) with its PKCS#8 key `NAME.key`, signed by the CA
/// `CA.pem`/`CA.key` in `dir`.
pub fn make_leaf(dir: &Path, ca: &str, name: &str, common: &str, extended_key_usage: &str, san: &str) {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join(format!("{ca}.key"))).unwrap()).unwrap();
    let issuer = Issuer::new(ca_params(ca), ca_key);
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(common);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match extended_key_usage {
        "serverAuth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientAuth" => ExtendedKeyUsagePurpose::ClientAuth,
        other => panic!("unknown extended key usage {other}"),
    }];
    params.subject_alt_names = san
        .split(',')
        .map(|name| match name.split_once(':') {
            Some(("DNS", dns)) => SanType::DnsName(dns.try_into().unwrap()),
            Some(("IP", ip)) => SanType::IpAddress(ip.parse().unwrap()),
            _ => panic!("a subject alternative name is DNS:… or IP:… (got {name})"),
        })
        .collect();
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let certificate = params.signed_by(&key, &issuer).unwrap();
    write(dir, name, &certificate, &key);
}
