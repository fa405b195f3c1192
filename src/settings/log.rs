//! `[log]`: the log format and filter.

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `PRICEFRONT__LOG__FORMAT`: `text` or `json`.
    pub format: LogFormat,
    /// `PRICEFRONT__LOG__FILTER`: a tracing filter; `RUST_LOG` wins when set.
    pub filter: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::settings::testing::env;

    #[test]
    fn the_format_is_text_or_json() {
        let s = Settings::load_from(None, env(&[("PRICEFRONT__LOG__FORMAT", "json")])).unwrap();
        assert_eq!(s.log.format, LogFormat::Json);
        assert!(Settings::load_from(None, env(&[("PRICEFRONT__LOG__FORMAT", "yaml")])).is_err());
    }
}
