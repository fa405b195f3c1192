//! `[telemetry]`: where spans are exported, and the share of new traces recorded.

use serde::Deserialize;

/// `[telemetry]`: span export. Without an endpoint nothing is exported.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `PRICEFRONT__TELEMETRY__OTLP_ENDPOINT`: OTLP/HTTP base URL (e.g. `http://collector:4318`;
    /// spans go to `/v1/traces`). Unset or empty: the standard OTLP variables
    /// ([`TelemetrySettings::traces_url`]), and if those are unset too, no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `PRICEFRONT__TELEMETRY__SAMPLE_RATIO`: share of new traces (those without a sampled
    /// incoming `traceparent`) recorded, 0.0–1.0. Default 1.0.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
}

impl TelemetrySettings {
    /// Where spans are sent, if anywhere: `{otlp_endpoint}/v1/traces`; else the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given; else `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`.
    /// Empty values count as unset.
    pub fn traces_url(&self) -> Option<String> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        let base = |url: String| format!("{}/v1/traces", url.trim_end_matches('/'));
        let ours = self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
        ours.map(base)
            .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(base))
    }
}

impl TelemetrySettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(ratio) = self.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(format!("telemetry.sample_ratio ({ratio}) must be between 0.0 and 1.0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;
    use crate::settings::testing::env;

    #[test]
    fn telemetry_sample_ratio_is_a_share() {
        let err = Settings::load_from(None, env(&[("PRICEFRONT__TELEMETRY__SAMPLE_RATIO", "1.5")])).unwrap_err();
        assert!(err.to_string().contains("telemetry.sample_ratio"), "{err}");
    }
}
