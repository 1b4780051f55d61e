//! A folder of images as a calibration batch: decoded (PNG, JPEG, BMP), resized on the short
//! side and centre-cropped to `--size`, scaled to [0, 1], normalised by `--mean`/`--std`, laid
//! out NCHW or NHWC.

use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::{Dim, Graph};
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Target (height, width); default: the input's declared spatial dims.
    pub size: Option<(usize, usize)>,
    /// Per-channel mean and std applied after scaling to [0, 1].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Default: NHWC when the input's last dim is 1 or 3 and its second is not, else NCHW.
    pub layout: Option<Layout>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            size: None,
            mean: vec![0.0],
            std: vec![1.0],
            layout: None,
        }
    }
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "bmp")
    )
}

pub fn load_images(
    dir: &Path,
    files: &[PathBuf],
    g: &Graph,
    o: &ImageOptions,
) -> Result<Feeds<f32>> {
    let images: Vec<&PathBuf> = files.iter().filter(|p| is_image(p)).collect();
    if images.is_empty() {
        return Err(Error::Data(format!(
            "{}: no .npz, .npy or image (.png, .jpg, .bmp) files",
            dir.display()
        )));
    }
    if g.inputs.len() != 1 {
        return Err(Error::Usage(format!(
            "{}: an image folder feeds single-input models; this one has {} inputs",
            dir.display(),
            g.inputs.len()
        )));
    }
    let input = g.inputs[0];
    let decl = g.values[input].shape.clone().unwrap_or_default();
    if decl.len() != 4 {
        return Err(Error::Usage(format!(
            "{}: images feed a 4-D input; {:?} has rank {}",
            dir.display(),
            g.name(input),
            decl.len()
        )));
    }
    let fixed = |d: &Dim| match d {
        Dim::Fixed(v) => Some(*v),
        _ => None,
    };
    let layout = o
        .layout
        .unwrap_or(match (fixed(&decl[1]), fixed(&decl[3])) {
            (Some(1 | 3), _) => Layout::Nchw,
            (_, Some(1 | 3)) => Layout::Nhwc,
            _ => Layout::Nchw,
        });
    let (c_dim, h_dim, w_dim) = match layout {
        Layout::Nchw => (&decl[1], &decl[2], &decl[3]),
        Layout::Nhwc => (&decl[3], &decl[1], &decl[2]),
    };
    let channels = fixed(c_dim).unwrap_or(3);
    if channels != 1 && channels != 3 {
        return Err(Error::Usage(format!(
            "{}: input {:?} has {channels} channels; images give 1 or 3",
            dir.display(),
            g.name(input)
        )));
    }
    let (h, w) = match (o.size, fixed(h_dim), fixed(w_dim)) {
        (Some(s), _, _) => s,
        (None, Some(h), Some(w)) => (h, w),
        _ => {
            return Err(Error::Usage(format!(
                "input {:?} has dynamic spatial dims: give --size H,W for the images",
                g.name(input)
            )));
        }
    };
    let stat = |v: &[f32], k: usize| v.get(k).or(v.first()).copied().unwrap_or(0.0);
    let mut data = Vec::with_capacity(images.len() * channels * h * w);
    for p in &images {
        let img = image::open(p)
            .map_err(|e| Error::Data(format!("{}: cannot decode the image: {e}", p.display())))?;
        let img = resize_crop(img, h, w);
        let px: Vec<[f32; 3]> = match channels {
            1 => img
                .to_luma8()
                .pixels()
                .map(|p| [p.0[0] as f32 / 255.0; 3])
                .collect(),
            _ => img
                .to_rgb8()
                .pixels()
                .map(|p| {
                    [
                        p.0[0] as f32 / 255.0,
                        p.0[1] as f32 / 255.0,
                        p.0[2] as f32 / 255.0,
                    ]
                })
                .collect(),
        };
        let norm = |v: f32, k: usize| (v - stat(&o.mean, k)) / stat(&o.std, k);
        match layout {
            Layout::Nchw => {
                for k in 0..channels {
                    data.extend(px.iter().map(|p| norm(p[k], k)));
                }
            }
            Layout::Nhwc => {
                for p in &px {
                    data.extend((0..channels).map(|k| norm(p[k], k)));
                }
            }
        }
    }
    let n = images.len();
    let shape = match layout {
        Layout::Nchw => vec![n, channels, h, w],
        Layout::Nhwc => vec![n, h, w, channels],
    };
    let t = ArrayD::from_shape_vec(IxDyn(&shape), data).expect("sized");
    Ok(vec![(g.name(input).to_string(), Tensor::f32(t))])
}

/// Resizes so the image covers h×w (short side fitted, aspect kept), then crops the centre.
fn resize_crop(img: image::DynamicImage, h: usize, w: usize) -> image::DynamicImage {
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let scale = (w as f64 / iw).max(h as f64 / ih);
    let (nw, nh) = (
        ((iw * scale).round() as u32).max(w as u32),
        ((ih * scale).round() as u32).max(h as u32),
    );
    let r = img.resize_exact(nw, nh, image::imageops::FilterType::Triangle);
    let (x0, y0) = ((nw - w as u32) / 2, (nh - h as u32) / 2);
    r.crop_imm(x0, y0, w as u32, h as u32)
}
