//! Where a provider's key comes from when a snapshot is built. The row's `api_key_ref` says:
//! `env:NAME` is read from the environment, `sealed:v1:...` is opened with the master key's
//! `Sealer`, and `config` (a key written in a config file while no master key was set) is
//! looked up among the keys this instance's own file holds.

use std::collections::HashMap;

use crate::secrets::{is_sealed, Sealer};
use crate::store::{ProviderRow, KEY_IN_CONFIG};

/// What a snapshot's build opens provider keys with; nothing else of the config reaches it.
#[derive(Default)]
pub struct ProviderKeys {
    /// The master key's sealer; `None` when no master key is set.
    sealer: Option<Sealer>,
    /// Keys written in this instance's config file, by provider name (kept in memory only).
    in_file: HashMap<String, String>,
}

impl ProviderKeys {
    pub fn new(sealer: Option<Sealer>, in_file: HashMap<String, String>) -> ProviderKeys {
        ProviderKeys { sealer, in_file }
    }

    /// The key of a provider: `None` when it has none, the reason when it cannot be had
    /// (for the start-up log: it names the variable or the setting, never a key).
    pub fn key_of(&self, p: &ProviderRow) -> Result<Option<String>, String> {
        let Some(stored) = p.api_key_ref.as_deref() else {
            return Ok(None);
        };
        if let Some(var) = stored.strip_prefix("env:") {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(format!("{var} is not set")),
            };
        }
        if stored == KEY_IN_CONFIG {
            return match self.in_file.get(&p.name) {
                Some(key) => Ok(Some(key.clone())),
                None => Err(
                    "its key is written in another instance's config file and no \
                     master key was set there to store it sealed in the database; set \
                     auth.master_key (the same on every instance) or give this instance the key"
                        .into(),
                ),
            };
        }
        if is_sealed(stored) {
            return match &self.sealer {
                Some(sealer) => sealer.open(stored).map(Some).map_err(|e| e.to_owned()),
                None => Err("its key is stored sealed and auth.master_key is not set".into()),
            };
        }
        Err("api_key_ref is neither env:NAME, a sealed key nor config".into())
    }
}
