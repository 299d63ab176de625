//! Reading the settings: from the process environment, or from `NAME=value` pairs (what
//! tests and embedding code pass), through envy, then validating them.

use super::{Config, ConfigError};

impl Config {
    /// Reads the process environment and validates it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_pairs(std::env::vars())
    }

    /// Reads `NAME=value` pairs (as the environment would give them) and validates them.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let pairs = pairs.into_iter().map(|(k, v)| (k.into(), v.into()));
        let config: Config = envy::from_iter(pairs).map_err(|e| ConfigError::Env(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}
