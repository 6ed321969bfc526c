//! End to end on one Kodak image: JPEG and WebP matched to one target rate.
//! Skips (with a message) when the image or the codec tools are not installed.

use std::path::PathBuf;

use mirage_eval::{encode_at_bpp, load_image, metrics, ClassicCodec, ClassicKind, CodecUnderTest};

const TARGET_BPP: f64 = 0.5;

fn kodim23() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/kodak/kodim23.png")
}

#[test]
fn jpeg_and_webp_hit_the_target_on_kodim23() {
    let path = kodim23();
    if !path.exists() {
        println!("skipped: {} not found", path.display());
        return;
    }
    let img = load_image(&path).unwrap();
    for kind in [ClassicKind::Jpeg, ClassicKind::WebP] {
        let codec = ClassicCodec::new(kind);
        if let Err(e) = codec.check_available() {
            println!("skipped {}: {e}", codec.name());
            continue;
        }
        let matched = encode_at_bpp(&codec, &img, TARGET_BPP).unwrap();
        assert!(matched.reach.is_reached(), "{:?}", matched.reach);
        let bpp = matched.encoding.bpp;
        assert!(bpp <= TARGET_BPP, "{}: {bpp} bpp", codec.name());
        // Matched, not just under: within 15% of the target.
        assert!(bpp > 0.85 * TARGET_BPP, "{}: only {bpp} bpp", codec.name());
        let decoded = codec.decode(&matched.encoding.bytes).unwrap();
        let psnr = metrics::psnr(&img, &decoded).unwrap();
        let ms_ssim = metrics::ms_ssim(&img, &decoded).unwrap();
        let ssim2 = metrics::ssimulacra2(&img, &decoded).unwrap();
        println!(
            "{}: {} -> {bpp:.4} bpp, PSNR {psnr:.2} dB, MS-SSIM {ms_ssim:.4}, SSIMULACRA2 {ssim2:.1}, {} encodes",
            codec.name(),
            codec.format_setting(matched.encoding.setting),
            matched.encodes
        );
        assert!(
            (28.0..45.0).contains(&psnr),
            "{}: PSNR {psnr}",
            codec.name()
        );
        assert!(
            (0.9..1.0).contains(&ms_ssim),
            "{}: MS-SSIM {ms_ssim}",
            codec.name()
        );
    }
}
