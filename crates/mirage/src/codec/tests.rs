use super::*;
use crate::decoders::{AddOns, Decoder, Realism};
use crate::layout::{padded_tensor, LATENT_STRIDE};
use mirage_format::realism_map::RealismMap;

/// A decode by the bundled v1 realism generator.
fn decode_with(
    codec: &Codec,
    add_ons: &AddOns,
    bytes: &[u8],
    realism: Realism,
) -> (RgbImage, Timings) {
    Decoder::Realism(add_ons.realism().unwrap(), realism)
        .decompress(codec, bytes)
        .unwrap()
}

#[test]
fn tiles_cover_the_latent_once() {
    for (yh, yw) in [(1, 1), (32, 48), (48, 32), (70, 25)] {
        let mut seen = vec![0; yh * yw];
        for t in tiles(yh, yw, TILE_MARGIN) {
            let [y0, y1, x0, x1] = t.core;
            for y in y0..y1 {
                for x in x0..x1 {
                    seen[y * yw + x] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{yh}x{yw}");
    }
}

/// A 640×640 test image's file and its dequantized latent (40×40 positions, so
/// that the tiles split it both ways).
fn file_and_latent(codec: &Codec) -> (Vec<u8>, Tensor) {
    let img = RgbImage::from_fn(640, 640, |x, y| {
        image::Rgb([(x / 3) as u8, (y / 3) as u8, ((x ^ y) & 255) as u8])
    });
    let (bytes, _) = codec.compress(&img, RateTarget::Quality(40.0)).unwrap();
    let c = codec.open(&bytes).unwrap();
    let (z, _) = codec.decode_symbols(&bytes).unwrap();
    let CodedLatent {
        symbols: y, params, ..
    } = codec.decode_latent(&c, &z, 10, 10).unwrap();
    let gain = codec.gains(&codec.inverse_gain, c.header.rate);
    let y_hat: Vec<f32> = y
        .iter()
        .zip(&params.means)
        .enumerate()
        .map(|(i, (&s, &mu))| (s as f32 + mu) * gain[i / 1600])
        .collect();
    let m = codec.entropy_model.latent_channels() as i64;
    (bytes, Tensor::from_slice(&y_hat).view([1, m, 40, 40]))
}

fn worst_difference(a: &RgbImage, b: &RgbImage) -> i32 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap()
}

/// The tiled decode agrees with one whole-image synthesis up to float rounding:
/// the margins hold the whole receptive field, so no seam can appear.
#[test]
fn tiles_are_seamless() {
    let codec = Codec::load_default().unwrap();
    let (bytes, y_hat) = file_and_latent(&codec);
    let (tiled, _) = codec.decompress(&bytes).unwrap();
    let whole = tch::no_grad(|| codec.net.synthesis(&y_hat).clamp(0.0, 1.0));
    let whole = crate::image_io::from_tensor(&whole).unwrap();
    // Different convolution blockings round differently: at most one 8-bit level.
    assert!(worst_difference(&tiled, &whole) <= 1);
}

/// The same for the realism generators, whose margin is wider: v1's, and the bundled
/// core's, which has noise inputs (each tile cuts its window from the whole image's
/// noise, so the tiles must agree with one decode of the whole noise grid).
#[test]
fn realism_tiles_are_seamless() {
    for model in [super::v1_model_path(), super::default_model_path()] {
        let codec = Codec::load(&model).unwrap();
        let add_ons = AddOns::bundled(&codec).unwrap();
        let generator = &add_ons.realism().unwrap().generator;
        assert_eq!(generator.config.noise, model != super::v1_model_path());
        let (bytes, y_hat) = file_and_latent(&codec);
        let (tiled, _) = decode_with(&codec, &add_ons, &bytes, Realism::Weight(1.0));
        let whole_tile = crate::layout::Tile {
            core: [0, 40, 0, 40],
            padded: [0, 40, 0, 40],
        };
        let noise = tiles::NoiseGrid::new(40, 40).window(&whole_tile);
        let whole = tch::no_grad(|| {
            let (x, features) = codec.net.synthesis.forward_with_features(&y_hat);
            generator
                .forward(&x, &features, &Tensor::from_slice(&[1f32]), &noise)
                .clamp(0.0, 1.0)
        });
        let whole = crate::image_io::from_tensor(&whole).unwrap();
        assert!(worst_difference(&tiled, &whole) <= 1, "{}", model.display());
    }
}

/// A 640×640 map with every level, in a pattern that differs across tile borders.
fn test_map() -> RealismMap {
    let levels = (0..100).map(|i| ((i / 3 + i / 20) % 4) as u8).collect();
    RealismMap {
        cols: 10,
        rows: 10,
        levels,
    }
}

/// Per-region decodes are as seamless as uniform ones: the tiled decode of a file
/// with a map matches the generator run once on the whole latent with the map's
/// weights for every pixel.
#[test]
fn realism_map_tiles_are_seamless() {
    let codec = Codec::load(&super::v1_model_path()).unwrap();
    let add_ons = AddOns::bundled(&codec).unwrap();
    let generator = &add_ons.realism().unwrap().generator;
    let (bytes, y_hat) = file_and_latent(&codec);
    let map = test_map();
    let with_map = attach_realism_map(&bytes, &map).unwrap();
    let (tiled, _) = decode_with(&codec, &add_ons, &with_map, Realism::Auto);
    let whole = tch::no_grad(|| {
        let (x, features) = codec.net.synthesis.forward_with_features(&y_hat);
        let w = Tensor::from_slice(&map.weights(0, 0, 640, 640)).view([1, 1, 640, 640]);
        // The v1 generator has no noise inputs.
        let noise = Tensor::zeros([1, 1, 1, 1], (tch::Kind::Float, tch::Device::Cpu));
        generator
            .forward_map(&x, &features, &w, &noise)
            .clamp(0.0, 1.0)
    });
    let whole = crate::image_io::from_tensor(&whole).unwrap();
    assert!(worst_difference(&tiled, &whole) <= 1);
    // An explicit weight overrides the map; the map changes the decode.
    let (zero, _) = decode_with(&codec, &add_ons, &with_map, Realism::Weight(0.0));
    let (plain, _) = decode_with(&codec, &add_ons, &bytes, Realism::Weight(0.0));
    assert_eq!(worst_difference(&zero, &plain), 0);
    assert!(worst_difference(&tiled, &plain) > 8);
}

/// A constant map decodes like the same uniform weight (FiLM per position equals
/// FiLM per image), and is stored as a header weight without a section.
#[test]
fn a_uniform_map_is_a_header_weight() {
    let codec = Codec::load(&super::v1_model_path()).unwrap();
    let add_ons = AddOns::bundled(&codec).unwrap();
    let (bytes, _) = file_and_latent(&codec);
    let map = RealismMap {
        cols: 10,
        rows: 10,
        levels: vec![2; 100],
    };
    let uniform = attach_realism_map(&bytes, &map).unwrap();
    assert_eq!(mirage_format::read(&uniform).unwrap().sections.len(), 2);
    let w = RealismMap::weight(2);
    let (a, _) = decode_with(&codec, &add_ons, &uniform, Realism::Auto);
    let (b, _) = decode_with(&codec, &add_ons, &bytes, Realism::Weight(w));
    assert!(worst_difference(&a, &b) <= 1);
    // The same weights through the map path.
    let c = codec.open(&bytes).unwrap();
    assert_eq!(c.sections.len(), 2);
    let mut varied = test_map();
    varied.levels.iter_mut().for_each(|l| *l = 2);
    varied.levels[0] = 1;
    let with_map = attach_realism_map(&bytes, &varied).unwrap();
    assert_eq!(mirage_format::read(&with_map).unwrap().sections.len(), 3);
    let (d, _) = decode_with(&codec, &add_ons, &with_map, Realism::Auto);
    // Far from the changed cell the decode is the uniform one.
    let far = |img: &RgbImage| image::imageops::crop_imm(img, 320, 320, 320, 320).to_image();
    assert!(worst_difference(&far(&d), &far(&a)) <= 1);
}

#[test]
fn a_bad_realism_map_is_an_error() {
    let codec = Codec::load(&super::v1_model_path()).unwrap();
    let (bytes, _) = file_and_latent(&codec);
    let wrong_grid = RealismMap {
        cols: 3,
        rows: 3,
        levels: vec![1; 9],
    };
    assert!(attach_realism_map(&bytes, &wrong_grid).is_err());
    // A map section of the wrong length, written past the codec's own checks.
    let mut c = mirage_format::read(&bytes).unwrap();
    c.sections.push(vec![6, 0, 0]);
    let corrupt = mirage_format::write(&c).unwrap();
    let err = codec.decompress(&corrupt).unwrap_err().to_string();
    assert!(err.contains("realism map"), "{err}");
    c.sections.push(vec![0]);
    let four = mirage_format::write(&c).unwrap();
    assert!(codec.decompress(&four).is_err());
}

/// The encoder's tiled analysis equals one whole-image analysis up to float rounding
/// (the margin holds the receptive field), and the files it gives decode without
/// seams: checked with small tiles (256² pixels) so that a 640×640 image has 9.
#[test]
fn tiled_analysis_matches_the_whole() {
    let codec = Codec::load_default().unwrap();
    let img = image::open(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kodim23-crop.png"),
    )
    .unwrap()
    .to_rgb8();
    let img = image::imageops::resize(&img, 640, 640, image::imageops::FilterType::Triangle);
    let whole = tch::no_grad(|| codec.net.analysis(&padded_tensor(&img)));
    let tiled = codec.analysis_tiled(&img, 16, tiles::ANALYSIS_MARGIN);
    let worst = (&whole - &tiled).abs().max().double_value(&[]);
    let scale = whole.abs().max().double_value(&[]);
    assert!(
        worst < 1e-4 * scale.max(1.0),
        "worst {worst}, scale {scale}"
    );
    // Without a margin the tiles do differ, so the comparison can fail.
    let seamy = codec.analysis_tiled(&img, 16, 0);
    let worst_seamy = (&whole - &seamy).abs().max().double_value(&[]);
    assert!(worst_seamy > 100.0 * worst.max(1e-6), "{worst_seamy}");
    // The files of both analyses decode to the same picture (a rounding flip changes
    // at most a few latent values, hence a few pixels by a level or two).
    let encode = |y: Tensor| {
        let analysis = Analysis {
            y,
            z: None,
            width: img.width(),
            height: img.height(),
            networks_time: Default::default(),
        };
        let (bytes, _) = codec.encode_analysis(&analysis, 400).unwrap();
        codec.decompress(&bytes).unwrap().0
    };
    let (a, b) = (encode(whole), encode(tiled));
    let psnr = mirage_eval::metrics::psnr(&a, &b).unwrap();
    eprintln!(
        "tiled analysis: latent within {worst:.1e} (scale {scale:.1}), decodes {psnr:.1} dB apart"
    );
    assert!(psnr > 50.0, "tiled against whole: {psnr:.1} dB");
}

/// A core cut down to decode-only answers to the full core's id, decodes its files to
/// the same pixels, refuses to encode, and is refused when its data is damaged.
#[test]
fn a_decode_only_core_decodes_as_the_full_one() {
    let full_bytes = std::fs::read(default_model_path()).unwrap();
    let cut = crate::model_file::decode_only(&full_bytes).unwrap();
    assert!(cut.len() < full_bytes.len() * 3 / 4, "{} bytes", cut.len());
    assert!(crate::model_file::decode_only(&cut).is_err(), "cut twice");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    std::fs::write(&path, &cut).unwrap();

    let full = Codec::load_default().unwrap();
    let decode_only = Codec::load(&path).unwrap();
    assert_eq!(decode_only.id(), full.id());
    assert!(decode_only.is_decode_only() && !full.is_decode_only());
    let img = RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 90])
    });
    let (bytes, _) = full.compress(&img, RateTarget::Quality(50.0)).unwrap();
    assert!(decode_only.decompress(&bytes).unwrap().0 == full.decompress(&bytes).unwrap().0);
    let err = decode_only
        .compress(&img, RateTarget::Quality(50.0))
        .unwrap_err();
    assert!(err.to_string().contains("decode-only"), "{err}");

    // One flipped bit in the last tensor's data.
    let mut damaged = cut.clone();
    *damaged.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    let err = Codec::load(&path).err().expect("a damaged file is refused");
    assert!(err.to_string().contains("damaged"), "{err}");
    // The header too: the context model switched off in the metadata.
    let entry = b"\"context\":\"1\"";
    let at = cut
        .windows(entry.len())
        .position(|w| w == entry)
        .expect("the metadata names the context model");
    let mut damaged = cut.clone();
    damaged[at + entry.len() - 2] = b'0';
    std::fs::write(&path, &damaged).unwrap();
    let err = Codec::load(&path)
        .err()
        .expect("a damaged header is refused");
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// Cores of up to two residual blocks per stage keep the margins their files were
/// always decoded with (so they decode to the same pixels); deeper ones get wider ones.
#[test]
fn margins_grow_with_depth_beyond_two_blocks() {
    for blocks in 0..=2 {
        assert_eq!(tiles::synthesis_margin(blocks, false), 4);
        assert_eq!(tiles::synthesis_margin(blocks, true), 6);
        assert_eq!(tiles::analysis_margin(blocks), 4);
    }
    // Four blocks: the synthesis reaches 5 positions, the generator on it 7.5, and the
    // analysis' 157-pixel field needs 79 pixels on each side.
    assert_eq!(tiles::synthesis_margin(4, false), 5);
    assert_eq!(tiles::synthesis_margin(4, true), 8);
    assert_eq!(tiles::analysis_margin(4), 5);
}

/// The bundled core deepened to `blocks` residual blocks per stage, exported to a model
/// file in `dir` and loaded. Every block's last layer is drawn at random, so that no
/// block is the identity and each reaches as far as a trained one would.
fn deepened_core(blocks: i64, dir: &Path) -> Codec {
    use crate::model::{layers::ConvPrecision, Hyperprior, ModelConfig};
    let file = crate::model_file::ModelFile::load(&super::default_model_path()).unwrap();
    let config = ModelConfig {
        residual_blocks: blocks,
        ..file.config
    };
    let vs = VarStore::new(Device::Cpu);
    let _net = Hyperprior::new(&vs.root(), config, ConvPrecision::F32);
    file.fill_available(&vs, config).unwrap();
    tch::manual_seed(11);
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if name.contains(".block") && name.ends_with("expand.weight") {
                var.copy_(&(var.randn_like() * 0.1));
            }
        }
    });
    let checkpoint = dir.join("checkpoint.safetensors");
    vs.save(&checkpoint).unwrap();
    let out = dir.join("deep.safetensors");
    crate::model_file::export(&checkpoint, config.context, None, &out).unwrap();
    let codec = Codec::load(&out).unwrap();
    assert_eq!(codec.config().residual_blocks, blocks);
    codec
}

/// The worst difference, in floats, between a tiled synthesis with `margin` (each tile's
/// core, as the decoder pastes it) and one synthesis of the whole 40 × 40 latent.
fn worst_tile_error(
    codec: &Codec,
    y_hat: &Tensor,
    margin: usize,
    generator: Option<&RealismGenerator>,
) -> f64 {
    let m = codec.entropy_model.latent_channels();
    let y_flat = Vec::<f32>::try_from(y_hat.flatten(0, -1)).unwrap();
    let weights = Weights::Uniform(1.0);
    let grid = tiles::NoiseGrid::new(40, 40);
    let whole_tile = crate::layout::Tile {
        core: [0, 40, 0, 40],
        padded: [0, 40, 0, 40],
    };
    let whole = tch::no_grad(|| match generator {
        None => codec.net.synthesis(y_hat),
        Some(g) => {
            let (x, features) = codec.net.synthesis.forward_with_features(y_hat);
            let noise = grid.window(&whole_tile);
            g.forward(&x, &features, &Tensor::from_slice(&[1f32]), &noise)
        }
    });
    let mut worst = 0f64;
    for tile in tiles(40, 40, margin) {
        let realism = generator.map(|g| (g, &weights, Some(&grid)));
        let part = tiles::synthesize_tile(&codec.net.synthesis, realism, &y_flat, m, 40, 40, &tile)
            .unwrap();
        let [y0, y1, x0, x1] = tile.core;
        let s = LATENT_STRIDE as i64;
        let expected = whole
            .narrow(2, y0 as i64 * s, (y1 - y0) as i64 * s)
            .narrow(3, x0 as i64 * s, (x1 - x0) as i64 * s)
            .contiguous()
            .flatten(0, -1);
        let part = Tensor::from_slice(&part);
        worst = worst.max((&part - &expected).abs().max().double_value(&[]));
    }
    worst
}

/// How far, in whole latent positions beyond the cell `c` on each side, the inputs of one
/// output cell reach: `grad` is the gradient of that cell's output with respect to a
/// `[1, C, H, W]` input with `scale` input samples per latent position. Exact, not a
/// tolerance: outside the receptive field the gradient is zero.
fn reach(grad: &Tensor, c: i64, scale: i64) -> usize {
    let touched = grad
        .abs()
        .sum_dim_intlist([0i64, 1, 2].as_slice(), false, Kind::Float);
    let touched = Vec::<f32>::try_from(touched).unwrap();
    let first = touched.iter().position(|&g| g != 0.0).unwrap() as i64;
    let last = touched.iter().rposition(|&g| g != 0.0).unwrap() as i64;
    let left = c * scale - first;
    let right = last - ((c + 1) * scale - 1);
    (left.max(right).max(0) as usize).div_ceil(scale as usize)
}

/// The receptive fields of a four-block core, found from gradients, against the margins:
/// each margin holds its field, and the fixed margins of a two-block core would not.
fn check_reach(codec: &Codec, generator: &RealismGenerator) {
    tch::manual_seed(5);
    let s = LATENT_STRIDE as i64;
    let m = codec.config().m;
    // Synthesis (and the generator on it): one output cell's pixels against the latent.
    let latent_reach = |decode: &dyn Fn(&Tensor) -> Tensor| {
        let y = Tensor::randn([1, m, 24, 24], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let x = decode(&y);
        x.narrow(2, 12 * s, s)
            .narrow(3, 12 * s, s)
            .sum(Kind::Float)
            .backward();
        reach(&y.grad(), 12, 1)
    };
    let core = latent_reach(&|y| codec.net.synthesis(y));
    assert!(
        core <= tiles::synthesis_margin(4, false),
        "synthesis reaches {core}"
    );
    assert!(core > TILE_MARGIN, "synthesis reaches {core}");

    let whole = crate::layout::Tile {
        core: [0, 24, 0, 24],
        padded: [0, 24, 0, 24],
    };
    let noise = tiles::NoiseGrid::new(24, 24).window(&whole);
    let realism = latent_reach(&|y| {
        let (x, features) = codec.net.synthesis.forward_with_features(y);
        generator.forward(&x, &features, &Tensor::from_slice(&[1f32]), &noise)
    });
    assert!(
        realism <= tiles::synthesis_margin(4, true),
        "generator reaches {realism}"
    );
    assert!(
        realism > tiles::REALISM_TILE_MARGIN,
        "generator reaches {realism}"
    );

    // Analysis: one latent cell against the pixels.
    let img =
        Tensor::rand([1, 3, 24 * s, 24 * s], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    codec
        .net
        .analysis(&img)
        .narrow(2, 12, 1)
        .narrow(3, 12, 1)
        .sum(Kind::Float)
        .backward();
    let analysis = reach(&img.grad(), 12, s);
    assert!(
        analysis <= tiles::analysis_margin(4),
        "analysis reaches {analysis}"
    );
    assert!(
        analysis > tiles::ANALYSIS_MARGIN,
        "analysis reaches {analysis}"
    );
}

/// A core with four residual blocks per stage, beyond what the fixed margins held, is
/// still tiled without seams: its synthesis, the realism generator on it, and its
/// analysis each agree with one untiled pass up to float rounding. A margin of one
/// position does not, so the comparisons can fail. With blocks drawn at random the
/// errors already fall to float rounding from a margin of 3 or 4, because the receptive
/// field's outer reach contributes little; so the margins are checked against the exact
/// field too, found from gradients (`check_reach`).
#[test]
fn deepened_core_tiles_are_seamless() {
    let dir = tempfile::tempdir().unwrap();
    let codec = deepened_core(4, dir.path());
    let (bytes, y_hat) = file_and_latent(&codec);

    let core = worst_tile_error(&codec, &y_hat, tiles::synthesis_margin(4, false), None);
    let short = worst_tile_error(&codec, &y_hat, 1, None);
    assert!(core < 1e-4, "{core}");
    assert!(short > 1e-2, "{short}");

    // The bundled generator, loaded without the check that ties it to its own core:
    // only its reach matters here.
    let generator_file = crate::model_file::DecoderFile::load(
        &super::default_realism_path(),
        crate::model_file::REALISM_FORMAT_NAME,
    )
    .unwrap();
    let generator_vs = VarStore::new(Device::Cpu);
    let generator = RealismGenerator::new(
        &generator_vs.root(),
        generator_file.realism_config().unwrap(),
        ConvPrecision::F32,
    );
    generator_file.fill(&generator_vs).unwrap();
    let g = Some(&generator);
    let realism = worst_tile_error(&codec, &y_hat, tiles::synthesis_margin(4, true), g);
    let short = worst_tile_error(&codec, &y_hat, 1, g);
    assert!(realism < 1e-4, "{realism}");
    assert!(short > 1e-2, "{short}");
    check_reach(&codec, &generator);

    // The decoder uses those margins: its 8-bit output matches the whole synthesis.
    let (tiled, _) = codec.decompress(&bytes).unwrap();
    let whole = tch::no_grad(|| codec.net.synthesis(&y_hat).clamp(0.0, 1.0));
    let whole = crate::image_io::from_tensor(&whole).unwrap();
    assert!(worst_difference(&tiled, &whole) <= 1);

    let img = RgbImage::from_fn(640, 640, |x, y| {
        image::Rgb([(x / 3) as u8, (y * 7 % 256) as u8, ((x ^ y) & 255) as u8])
    });
    let whole = tch::no_grad(|| codec.net.analysis(&padded_tensor(&img)));
    let error = |margin| {
        let tiled = codec.analysis_tiled(&img, 16, margin);
        (&whole - &tiled).abs().max().double_value(&[])
    };
    let scale = whole.abs().max().double_value(&[]);
    let (analysis, short) = (error(tiles::analysis_margin(4)), error(1));
    assert!(analysis < 1e-4 * scale.max(1.0), "{analysis}");
    assert!(short > 1e-2 * scale, "{short}");
}
