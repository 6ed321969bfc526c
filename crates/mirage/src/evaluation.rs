//! Mirage as a codec under test in the evaluation suite (`mirage-eval`), so that it is
//! rate-matched, measured and reported exactly like the classic codecs.

use crate::codec::{Codec, RateTarget};
use crate::model_file::id_hex;
use anyhow::Result;
use image::RgbImage;
use mirage_eval::codecs::{MoreBits, SettingRange};
use mirage_eval::CodecUnderTest;

pub struct MirageUnderTest {
    pub codec: Codec,
}

impl CodecUnderTest for MirageUnderTest {
    fn name(&self) -> String {
        "mirage".into()
    }

    fn description(&self) -> String {
        format!(
            "Mirage mean-scale hyperprior (model {}), --quality 0..100",
            id_hex(&self.codec.id())
        )
    }

    fn settings(&self) -> SettingRange {
        SettingRange {
            min: 0.0,
            max: 100.0,
            step: 0.1,
            more_bits: MoreBits::HigherSetting,
        }
    }

    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        Ok(self.codec.compress(img, RateTarget::Quality(setting))?.0)
    }

    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        Ok(self.codec.decompress(bytes)?.0)
    }

    fn format_setting(&self, setting: f64) -> String {
        format!("q{setting:.1}")
    }
}
