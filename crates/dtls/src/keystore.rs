//! Server credentials: a private key and its certificate chain, from a Java key store (JKS), a
//! PKCS#12 store (as `keytool` and `openssl pkcs12` write them, legacy RC2/3DES encryption
//! included) or PEM files (the key optionally encrypted).
//!
//! JKS is Sun's own format, which no Rust crate reads reliably, so it is parsed here:
//!
//! ```text
//! u32 magic 0xFEEDFEED, u32 version (1 or 2), u32 entry count, then per entry:
//!   u32 tag (1 = private key, 2 = trusted certificate), UTF alias, u64 creation time,
//!   tag 1: u32 len + EncryptedPrivateKeyInfo (DER), u32 chain length,
//!          per certificate: [v2: UTF type "X.509"], u32 len + DER
//!   tag 2: [v2: UTF type], u32 len + DER
//! 20 bytes SHA-1(password as UTF-16BE ‖ "Mighty Aphrodite" ‖ everything before)
//! ```
//!
//! The private key is protected with Sun's `KeyProtector` (OID 1.3.6.1.4.1.42.2.17.1.1): the
//! encrypted data is `salt(20) ‖ key XOR keystream ‖ check(20)`, the keystream being the chain
//! `d = SHA-1(password ‖ d)` starting from the salt, and `check = SHA-1(password ‖ key)`; the
//! plain key is a PKCS#8 `PrivateKeyInfo`.

use std::path::Path;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::sha::sha1;
use openssl::x509::X509;

/// A private key and its certificate chain, leaf first.
pub struct Credentials {
    pub key: PKey<Private>,
    pub chain: Vec<X509>,
}

impl Credentials {
    /// Credentials whose key belongs to the first certificate of the chain.
    fn checked(key: PKey<Private>, chain: Vec<X509>, source: &str) -> Result<Credentials, CredentialsError> {
        let leaf = chain.first().ok_or_else(|| CredentialsError::Format(format!("{source}: no certificate")))?;
        let matches = leaf.public_key().map(|public| public.public_eq(&key)).unwrap_or(false);
        if !matches {
            return Err(CredentialsError::Format(format!(
                "the private key in {source} does not belong to the certificate `{}`",
                leaf.subject_name().entries().filter_map(|e| e.data().to_string().ok()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Credentials { key, chain })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subject = self.chain.first().map(|c| format!("{:?}", c.subject_name())).unwrap_or_default();
        f.debug_struct("Credentials").field("key", &self.key.id()).field("leaf", &subject).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreType {
    Jks,
    Pkcs12,
}

/// Why credentials could not be loaded; each variant points at one input.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("wrong key store password for {0} (the store's integrity check failed)")]
    WrongStorePassword(String),
    #[error("wrong private key password for alias `{0}`")]
    WrongKeyPassword(String),
    #[error("no key entry `{alias}` in {path}; it holds: {available}")]
    NoSuchAlias { alias: String, path: String, available: String },
    #[error("{0}")]
    Format(String),
}

const JKS_MAGIC: u32 = 0xFEED_FEED;
const JCEKS_MAGIC: u32 = 0xCECE_CECE;

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Unreadable { path: path.display().to_string(), source })
}

/// Loads the key entry `alias` of a JKS or PKCS#12 store; the type is taken from the file when
/// `store_type` is `None`. An empty `key_password` means the store password.
pub fn load_key_store(
    path: &Path,
    store_type: Option<StoreType>,
    store_password: &str,
    key_password: &str,
    alias: &str,
) -> Result<Credentials, CredentialsError> {
    let bytes = read(path)?;
    let name = path.display().to_string();
    let detected = if bytes.len() >= 4 && u32::from_be_bytes(bytes[..4].try_into().unwrap()) == JKS_MAGIC {
        StoreType::Jks
    } else if bytes.len() >= 4 && u32::from_be_bytes(bytes[..4].try_into().unwrap()) == JCEKS_MAGIC {
        return Err(CredentialsError::Format(format!(
            "{name} is a JCEKS store; convert it with keytool -importkeystore -deststoretype PKCS12"
        )));
    } else {
        StoreType::Pkcs12
    };
    let store_type = store_type.unwrap_or(detected);
    if store_type != detected {
        return Err(CredentialsError::Format(format!("{name} is not a {store_type:?} store (it looks like {detected:?})")));
    }
    let key_password = if key_password.is_empty() { store_password } else { key_password };
    match store_type {
        StoreType::Jks => load_jks(&bytes, &name, store_password, key_password, alias),
        StoreType::Pkcs12 => load_pkcs12(&bytes, &name, store_password, alias),
    }
}

/// Loads a PEM certificate chain (leaf first) and a PEM private key, decrypting it with
/// `key_password` when it is encrypted.
pub fn load_pem(cert: &Path, key: &Path, key_password: &str) -> Result<Credentials, CredentialsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let key_name = key.display().to_string();
    let chain = X509::stack_from_pem(&cert_pem)
        .map_err(|e| CredentialsError::Format(format!("{} holds no PEM certificate: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(CredentialsError::Format(format!("{} holds no PEM certificate", cert.display())));
    }
    let encrypted = String::from_utf8_lossy(&key_pem).contains("ENCRYPTED");
    // A callback (never OpenSSL's terminal prompt) supplies the password, empty when none is set.
    let key = PKey::private_key_from_pem_callback(&key_pem, |buf| {
        let n = key_password.len().min(buf.len());
        buf[..n].copy_from_slice(&key_password.as_bytes()[..n]);
        Ok(n)
    })
    .map_err(|e| {
        if encrypted {
            CredentialsError::WrongKeyPassword(key.display().to_string())
        } else {
            CredentialsError::Format(format!("{} holds no PEM private key: {e}", key.display()))
        }
    })?;
    Credentials::checked(key, chain, &key_name)
}

fn load_pkcs12(bytes: &[u8], name: &str, password: &str, alias: &str) -> Result<Credentials, CredentialsError> {
    let store = Pkcs12::from_der(bytes)
        .map_err(|_| CredentialsError::Format(format!("{name} is neither a JKS nor a PKCS#12 store")))?;
    let parsed = match store.parse2(password) {
        Ok(p) => p,
        Err(e) if e.to_string().contains("mac verify failure") => {
            return Err(CredentialsError::WrongStorePassword(name.to_string()));
        }
        Err(_) => {
            // Older stores (openssl pkcs12 -legacy, Java 8 keytool) use RC2-40 or 3DES, which
            // OpenSSL 3 keeps in its legacy provider.
            load_legacy_provider();
            store.parse2(password).map_err(|e| {
                if e.to_string().contains("mac verify failure") {
                    CredentialsError::WrongStorePassword(name.to_string())
                } else {
                    CredentialsError::Format(format!("cannot decrypt {name}: {e}"))
                }
            })?
        }
    };
    let (Some(key), Some(cert)) = (parsed.pkey, parsed.cert) else {
        return Err(CredentialsError::NoSuchAlias {
            alias: alias.to_string(),
            path: name.to_string(),
            available: "no private key entry".into(),
        });
    };
    // The friendly name is the alias keytool and `openssl pkcs12 -name` give; a store without
    // one has nothing to compare with.
    if let Some(found) = cert.alias().map(|a| String::from_utf8_lossy(a).into_owned())
        && !alias.is_empty()
        && !found.eq_ignore_ascii_case(alias)
    {
        return Err(CredentialsError::NoSuchAlias { alias: alias.to_string(), path: name.to_string(), available: found });
    }
    let mut chain = vec![cert];
    if let Some(ca) = parsed.ca {
        chain.extend(ca);
    }
    Credentials::checked(key, chain, name)
}

fn load_legacy_provider() {
    static LEGACY: std::sync::OnceLock<Option<openssl::provider::Provider>> = std::sync::OnceLock::new();
    LEGACY.get_or_init(|| openssl::provider::Provider::try_load(None, "legacy", true).ok());
}

/// A cursor over the big-endian JKS stream.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CredentialsError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(truncated)?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u16(&mut self) -> Result<u16, CredentialsError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, CredentialsError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn utf(&mut self) -> Result<String, CredentialsError> {
        let n = self.u16()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn blob(&mut self) -> Result<&'a [u8], CredentialsError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn truncated() -> CredentialsError {
    CredentialsError::Format("the JKS store is truncated".into())
}

fn utf16be(password: &str) -> Vec<u8> {
    password.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

struct JksKeyEntry<'a> {
    alias: String,
    protected_key: &'a [u8],
    chain: Vec<&'a [u8]>,
}

fn load_jks(bytes: &[u8], name: &str, store_password: &str, key_password: &str, alias: &str) -> Result<Credentials, CredentialsError> {
    if bytes.len() < 32 {
        return Err(truncated());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 20);
    let mut mac = utf16be(store_password);
    mac.extend_from_slice(b"Mighty Aphrodite");
    mac.extend_from_slice(body);
    if !openssl::memcmp::eq(&sha1(&mac), digest) {
        return Err(CredentialsError::WrongStorePassword(name.to_string()));
    }
    let mut r = Reader { bytes: body, pos: 4 };
    let version = r.u32()?;
    if version != 1 && version != 2 {
        return Err(CredentialsError::Format(format!("{name}: unsupported JKS version {version}")));
    }
    let count = r.u32()?;
    let mut keys = Vec::new();
    let mut all_aliases = Vec::new();
    for _ in 0..count {
        let tag = r.u32()?;
        let entry_alias = r.utf()?;
        r.take(8)?; // creation time
        all_aliases.push(entry_alias.clone());
        match tag {
            1 => {
                let protected_key = r.blob()?;
                let n = r.u32()?;
                let mut chain = Vec::new();
                for _ in 0..n {
                    if version == 2 {
                        r.utf()?;
                    }
                    chain.push(r.blob()?);
                }
                keys.push(JksKeyEntry { alias: entry_alias, protected_key, chain });
            }
            2 => {
                if version == 2 {
                    r.utf()?;
                }
                r.blob()?;
            }
            other => return Err(CredentialsError::Format(format!("{name}: unknown JKS entry tag {other}"))),
        }
    }
    let Some(entry) = keys.into_iter().find(|k| k.alias.eq_ignore_ascii_case(alias)) else {
        return Err(CredentialsError::NoSuchAlias {
            alias: alias.to_string(),
            path: name.to_string(),
            available: if all_aliases.is_empty() { "no entries".into() } else { all_aliases.join(", ") },
        });
    };
    let encrypted = encrypted_private_key_data(entry.protected_key)
        .ok_or_else(|| CredentialsError::Format(format!("{name}: key entry `{}` is not a Sun JKS protected key", entry.alias)))?;
    let pkcs8 = jks_unprotect(encrypted, key_password).ok_or_else(|| CredentialsError::WrongKeyPassword(entry.alias.clone()))?;
    let key = PKey::private_key_from_pkcs8(&pkcs8)
        .map_err(|e| CredentialsError::Format(format!("{name}: key entry `{}` is not a PKCS#8 key: {e}", entry.alias)))?;
    let chain = entry
        .chain
        .iter()
        .map(|der| X509::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialsError::Format(format!("{name}: bad certificate in `{}`: {e}", entry.alias)))?;
    if chain.is_empty() {
        return Err(CredentialsError::Format(format!("{name}: key entry `{}` has no certificate", entry.alias)));
    }
    Credentials::checked(key, chain, name)
}

/// Sun's OID for its JKS key protection, 1.3.6.1.4.1.42.2.17.1.1, DER-encoded.
const SUN_KEY_PROTECTOR_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01];

/// The `encryptedData` of an `EncryptedPrivateKeyInfo` protected with Sun's key protector.
fn encrypted_private_key_data(der: &[u8]) -> Option<&[u8]> {
    let (tag, outer, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, algorithm, rest) = der_element(outer)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_element(algorithm)?;
    if tag != 0x06 || oid != SUN_KEY_PROTECTOR_OID {
        return None;
    }
    let (tag, data, _) = der_element(rest)?;
    (tag == 0x04).then_some(data)
}

/// One DER element: (tag, contents, what follows).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = der.get(2..2 + n)?.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, der.get(header..end)?, der.get(end..)?))
}

/// Reverses Sun's `KeyProtector`; `None` when the password is wrong.
fn jks_unprotect(data: &[u8], password: &str) -> Option<Vec<u8>> {
    if data.len() < 40 {
        return None;
    }
    let (salt, rest) = data.split_at(20);
    let (encrypted, check) = rest.split_at(rest.len() - 20);
    let password = utf16be(password);
    let mut digest: [u8; 20] = salt.try_into().ok()?;
    let mut key = Vec::with_capacity(encrypted.len());
    for block in encrypted.chunks(20) {
        let mut input = password.clone();
        input.extend_from_slice(&digest);
        digest = sha1(&input);
        key.extend(block.iter().zip(digest.iter()).map(|(a, b)| a ^ b));
    }
    let mut input = password;
    input.extend_from_slice(&key);
    openssl::memcmp::eq(&sha1(&input), check).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sun's protector run forwards, to check the reverse without keytool.
    fn jks_protect(key: &[u8], password: &str, salt: [u8; 20]) -> Vec<u8> {
        let pw = utf16be(password);
        let mut digest = salt;
        let mut out = salt.to_vec();
        for block in key.chunks(20) {
            let mut input = pw.clone();
            input.extend_from_slice(&digest);
            digest = sha1(&input);
            out.extend(block.iter().zip(digest.iter()).map(|(a, b)| a ^ b));
        }
        let mut input = pw;
        input.extend_from_slice(key);
        out.extend_from_slice(&sha1(&input));
        out
    }

    #[test]
    fn key_protector_round_trip_and_wrong_password() {
        let key: Vec<u8> = (0..=200u8).collect();
        let protected = jks_protect(&key, "päss", [7; 20]);
        assert_eq!(jks_unprotect(&protected, "päss").unwrap(), key);
        assert!(jks_unprotect(&protected, "pass").is_none());
        assert!(jks_unprotect(&protected[..30], "päss").is_none());
    }

    #[test]
    fn der_elements() {
        let der = [0x30, 0x03, 0x04, 0x01, 0xaa, 0xff];
        let (tag, inner, rest) = der_element(&der).unwrap();
        assert_eq!((tag, inner, rest), (0x30, &der[2..5], &der[5..]));
        assert!(der_element(&[0x30, 0x05, 0x00]).is_none());
        assert!(der_element(&[0x30, 0x81]).is_none());
    }
}
