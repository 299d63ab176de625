//! HDR histograms across processes: a worker sends each histogram in hdrhistogram's V2
//! serialisation (base64 in its JSON reply), and the coordinator adds them up, so the
//! merged percentiles are those of every sample, not an average of percentiles.

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

use crate::report::histogram;

/// A histogram of microsecond samples.
pub fn of_us<'a>(samples: impl IntoIterator<Item = &'a u32>) -> Histogram<u64> {
    let mut h = histogram();
    for &us in samples {
        h.saturating_record(u64::from(us).max(1));
    }
    h
}

pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("histogram does not deserialise: {e:?}"))
}

/// Adds an encoded histogram into `total`.
pub fn add(total: &mut Histogram<u64>, text: &str) -> anyhow::Result<()> {
    total
        .add(decode(text)?)
        .map_err(|e| anyhow::anyhow!("histograms do not add up: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles_are_those_of_every_sample() {
        let low: Vec<u32> = (1..=900).collect();
        let high: Vec<u32> = (100_001..=100_100).collect();
        let mut total = histogram();
        add(&mut total, &encode(&of_us(&low))).unwrap();
        add(&mut total, &encode(&of_us(&high))).unwrap();
        assert_eq!(total.len(), 1000);
        assert!(total.value_at_quantile(0.5) <= 501);
        assert!(total.value_at_quantile(0.95) > 100_000);
        assert!(decode("not base64!").is_err());
    }
}
