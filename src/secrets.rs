//! Provider API keys at rest. A key given to the gateway (in config.toml or through the admin
//! API) is either an `env:NAME` reference, stored as it is, or the key itself, stored sealed:
//! AES-256-GCM under a key derived (HKDF-SHA256) from the master key, as
//! `sealed:v1:<base64 of nonce and ciphertext>`. The database alone then never reveals a
//! provider key, and no API returns one.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "sealed:v1:";
/// Binds derived keys to this use, so the master key's other uses never share them.
const INFO: &[u8] = b"tollgate provider api keys v1";

/// Seals and opens provider keys with the key derived from one master key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    pub fn new(master_key: &str) -> Sealer {
        let prk = Salt::new(HKDF_SHA256, b"tollgate").extract(master_key.as_bytes());
        let mut bytes = [0u8; 32];
        prk.expand(&[INFO], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut bytes))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte AES-256 key");
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// `sealed:v1:...` for the key.
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source is available");
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .expect("AES-GCM sealing of a short key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// The key sealed in `stored`; an error when it is not a sealed value or was sealed with
    /// another master key (the message names neither key).
    pub fn open(&self, stored: &str) -> Result<String, &'static str> {
        let encoded = stored.strip_prefix(PREFIX).ok_or("not a sealed key")?;
        let mut data = B64
            .decode(encoded)
            .map_err(|_| "the sealed key is corrupt")?;
        if data.len() < NONCE_LEN {
            return Err("the sealed key is corrupt");
        }
        let sealed = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| "corrupt nonce")?;
        let mut sealed = sealed;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .map_err(|_| "the sealed key does not open with this master key")?;
        String::from_utf8(plain.to_vec()).map_err(|_| "the sealed key is corrupt")
    }
}

/// Whether a stored `api_key_ref` is a sealed key.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_master_key_only() {
        let sealer = Sealer::new("master-1");
        let sealed = sealer.seal("sk-live-123");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk-live-123"));
        assert_ne!(
            sealed,
            sealer.seal("sk-live-123"),
            "a fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), "sk-live-123");
        let other = Sealer::new("master-2");
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(sealer.open(&tampered).is_err());
        assert!(sealer.open("env:OPENAI_API_KEY").is_err());
    }
}
