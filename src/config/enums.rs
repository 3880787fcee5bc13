//! Settings that take one of a fixed set of words, as serde enums.

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A word parsed by serde into `T`. A word `T` does not know is kept as written, so
/// validation reports it with its line and table, together with every other problem, instead
/// of parsing stopping at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<T> {
    Valid(T),
    Invalid(String),
}

impl<T: Copy + Default> Choice<T> {
    /// The parsed value. A loaded config holds no invalid word (validation refuses the file),
    /// so the default only ever stands in for one in a config that was never validated.
    pub fn get(&self) -> T {
        match self {
            Choice::Valid(value) => *value,
            Choice::Invalid(_) => T::default(),
        }
    }
}

impl<T> Choice<T> {
    pub fn is_valid(&self) -> bool {
        matches!(self, Choice::Valid(_))
    }
}

impl<T: Default> Default for Choice<T> {
    fn default() -> Self {
        Choice::Valid(T::default())
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Anything but a string is refused by the parser, with its line, as any mistyped value.
        let word = String::deserialize(deserializer)?;
        let parsed = T::deserialize(
            IntoDeserializer::<serde::de::value::Error>::into_deserializer(word.as_str()),
        );
        Ok(match parsed {
            Ok(value) => Choice::Valid(value),
            Err(_) => Choice::Invalid(word),
        })
    }
}

/// As the word (`changed_settings` compares sections through their serialised form).
impl<T: Serialize> Serialize for Choice<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Choice::Valid(value) => value.serialize(serializer),
            Choice::Invalid(word) => word.serialize(serializer),
        }
    }
}

/// `[server] log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One object per line, for log shippers.
    Json,
}

/// `[redis] on_failure`: what to do when Redis, which holds the shared limits, cannot be
/// reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisFailure {
    /// Refuse the request (429): never exceed a provider's limit.
    FailClosed,
    /// Keep serving with this instance's share of the limit (limit / instances).
    #[default]
    Local,
}

/// `[cache] backend`: where cached answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// This instance's memory (moka), bounded by `max_bytes` or `max_entries`.
    #[default]
    Memory,
    /// The Redis of `[redis] url`, shared by every instance.
    Redis,
}

impl CacheBackend {
    /// The `backend` label of `tollgate_cache_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheBackend::Memory => "memory",
            CacheBackend::Redis => "redis",
        }
    }
}

/// `[[providers]] api`: the wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    Mock,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Azure => "azure",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
            Api::Mock => "mock",
        }
    }

    pub fn parse(s: &str) -> Option<Api> {
        Some(match s {
            "openai" => Api::Openai,
            "azure" => Api::Azure,
            "anthropic" => Api::Anthropic,
            "gemini" => Api::Gemini,
            "mock" => Api::Mock,
            _ => return None,
        })
    }
}

/// `[[models]] model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    /// Also written `llm`, as the seeds do.
    #[default]
    #[serde(alias = "llm")]
    Chat,
    /// A chat model that takes images.
    Vlm,
    Embedding,
}

impl ModelType {
    /// The registry's word for it (the one stored in `llm_models.model_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Chat => "chat",
            ModelType::Vlm => "vlm",
            ModelType::Embedding => "embedding",
        }
    }
}

/// `[[models]] status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    #[default]
    Active,
    Inactive,
    /// Serves until its `deprecation_date`.
    Deprecated,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Active => "active",
            ModelStatus::Inactive => "inactive",
            ModelStatus::Deprecated => "deprecated",
        }
    }
}

/// `[[routes]] strategy`: in which order a name's deployments are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The configured order: priority (lower first) for a public name, the listed order of
    /// a route's targets.
    #[default]
    Fallback,
    /// Lowest estimated cost of this request first.
    Cheapest,
    /// Lowest observed latency (EWMA) first.
    LowestLatency,
    /// Fewest requests in flight first.
    LeastBusy,
    /// Random, in proportion to `weight`.
    Weighted,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word<T: DeserializeOwned>(w: &str) -> Choice<T> {
        let d: serde::de::value::StrDeserializer<serde::de::value::Error> = w.into_deserializer();
        Choice::deserialize(d).unwrap()
    }

    #[test]
    fn every_word_parses_to_its_value_and_others_are_kept_as_written() {
        use Choice::{Invalid, Valid};
        assert_eq!(word("text"), Valid(LogFormat::Text));
        assert_eq!(word("json"), Valid(LogFormat::Json));
        assert_eq!(word::<LogFormat>("JSON"), Invalid("JSON".into()));
        assert_eq!(word("chat"), Valid(ModelType::Chat));
        assert_eq!(word("llm"), Valid(ModelType::Chat));
        assert_eq!(word("vlm"), Valid(ModelType::Vlm));
        assert_eq!(word("embedding"), Valid(ModelType::Embedding));
        assert_eq!(word::<ModelType>("llama"), Invalid("llama".into()));
        assert_eq!(word("active"), Valid(ModelStatus::Active));
        assert_eq!(word("inactive"), Valid(ModelStatus::Inactive));
        assert_eq!(word("deprecated"), Valid(ModelStatus::Deprecated));
        assert_eq!(word::<ModelStatus>("gone"), Invalid("gone".into()));
        assert_eq!(word("fallback"), Valid(Strategy::Fallback));
        assert_eq!(word("cheapest"), Valid(Strategy::Cheapest));
        assert_eq!(word("lowest_latency"), Valid(Strategy::LowestLatency));
        assert_eq!(word("least_busy"), Valid(Strategy::LeastBusy));
        assert_eq!(word("weighted"), Valid(Strategy::Weighted));
        assert_eq!(word::<Strategy>("leastBusy"), Invalid("leastBusy".into()));
    }

    #[test]
    fn a_word_serialises_as_written_and_llm_as_chat() {
        let words: Vec<Choice<ModelType>> = vec![word("llm"), word("vlm"), word("llama")];
        assert_eq!(
            serde_json::to_string(&words).unwrap(),
            r#"["chat","vlm","llama"]"#
        );
        assert_eq!(word::<ModelType>("llama").get(), ModelType::Chat);
    }

    #[test]
    fn model_words_are_the_registry_words() {
        for (value, stored) in [
            (ModelType::Chat, "chat"),
            (ModelType::Vlm, "vlm"),
            (ModelType::Embedding, "embedding"),
        ] {
            assert_eq!(
                (value.as_str(), word(stored)),
                (stored, Choice::Valid(value))
            );
        }
        for (value, stored) in [
            (ModelStatus::Active, "active"),
            (ModelStatus::Inactive, "inactive"),
            (ModelStatus::Deprecated, "deprecated"),
        ] {
            assert_eq!(
                (value.as_str(), word(stored)),
                (stored, Choice::Valid(value))
            );
        }
    }
}
