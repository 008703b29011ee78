#!/usr/bin/python3
"""Golden fixtures for blip2/io/image.hpp: what Pillow decodes, resizes and normalises.

Regenerate (from the repository root; Debian's python3-pil 9.4 and python3-numpy, nothing else):

    /usr/bin/python3 tests/make_image_fixtures.py

It rewrites tests/fixtures/images/ from scratch, deterministically (fixed seeds; Pillow's PNG and JPEG
encoders are deterministic for a given version):

    in_*.png, in_*.jpg   decoder inputs, made here: RGB at odd and square sizes, greyscale (8 and 16 bit),
                         RGBA with varying alpha, a palette with a transparent entry, a 4:2:0 baseline JPEG,
                         a 4:4:4 JPEG, a progressive JPEG, a greyscale JPEG, a 1-pixel-wide PNG
    ref_*.png            Pillow's results, stored losslessly as 8-bit RGB PNG:
                           ref_decode_<input>.png            Image.open(input).convert("RGB")
                                                             (not written for an RGB PNG input: its
                                                             decode is the input file itself)
                           ref_resize_<input>_<W>x<H>.png    that, .resize((W, H), Image.BICUBIC)
    transform_<input>_<S>.f32   the BLIP-2 eval transform of that decode: resize to S x S (BICUBIC),
                         /255, minus the CLIP mean, over the CLIP std, as torchvision's ToTensor and
                         Normalize compute it in float32; (3, S, S) little-endian float32, channels first
    manifest.txt         one line per check (see below), read by tests/test_images.cpp

and the generated seeds of tests/fuzz/fuzz_image.cpp in tests/fuzz/corpus_image/ (tiny PNGs and JPEGs;
the regress_*.jpg seeds there are fuzzer findings and are left alone).

manifest.txt lines (whitespace-separated):
    decode    <input> <ref png> <width> <height> <fnv>
    resize    <input> <W> <H> <ref png> <fnv>
    transform <input> <S> <f32 file>
<fnv> is the 64-bit FNV-1a hash (hex) of the reference's RGB bytes (HWC), so the test can prove that it
reads each ref_*.png back exactly before comparing anything with it.

Resize references are computed from Pillow's own decode, so the resize check compares resampling only;
the JPEG decode difference (stb against libjpeg-turbo) is measured separately by the decode check.
"""
import io
import os
import shutil

import numpy as np
from PIL import Image

assert Image.__version__.startswith("9.4"), "these fixtures are Pillow 9.4's; got " + Image.__version__

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "images")
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def scene(w, h, seed, noise=6.0):
    """A smooth synthetic picture (gradients, a disc, a bar, a checker patch) plus mild noise: enough
    structure to exercise the kernel's lobes (sharp edges overshoot). The large ones get little noise so
    that they stay small as PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 5.0 + y / 7.0)
    img = np.stack([r, g, b], axis=-1)
    disc = (x - 0.6 * w) ** 2 + (y - 0.4 * h) ** 2 < (0.25 * min(w, h)) ** 2
    img[disc] = [250, 20, 30]
    bar = (np.abs(x - 0.25 * w) < max(1, w // 16))
    img[bar] = [0, 0, 0]
    checker = ((x // 2 + y // 2) % 2 == 0) & (x > 0.7 * w) & (y > 0.7 * h)
    img[checker] = [255, 255, 255]
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save(im, name, **kw):
    im.save(os.path.join(OUT, name), **kw)
    return name


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    inputs = []

    # PNG inputs (decoded exactly by any correct decoder).
    inputs.append(save(Image.fromarray(scene(37, 23, 1), "RGB"), "in_rgb_37x23.png"))
    inputs.append(save(Image.fromarray(scene(300, 200, 2, noise=0.0), "RGB"), "in_rgb_300x200.png", optimize=True))
    inputs.append(save(Image.fromarray(scene(64, 64, 3), "RGB"), "in_rgb_64x64.png"))
    inputs.append(save(Image.fromarray(scene(1, 7, 4), "RGB"), "in_rgb_1x7.png"))
    inputs.append(save(Image.fromarray(scene(45, 31, 5)[:, :, 1], "L"), "in_grey_45x31.png"))
    rgba = np.dstack([scene(40, 40, 6), np.linspace(0, 255, 40 * 40).reshape(40, 40).astype(np.uint8)])
    inputs.append(save(Image.fromarray(rgba, "RGBA"), "in_rgba_40x40.png"))
    pal = Image.fromarray(scene(33, 21, 7), "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    inputs.append(save(pal, "in_palette_33x21.png", transparency=3))
    grey16 = (np.arange(20 * 12, dtype=np.uint16).reshape(12, 20) * 7) % 600  # many samples above 255
    im16 = Image.fromarray(grey16.astype(np.int32), "I")
    inputs.append(save(im16, "in_grey16_20x12.png"))
    assert Image.open(os.path.join(OUT, "in_grey16_20x12.png")).mode == "I"

    # JPEG inputs (libjpeg-turbo's encoder; decoders differ by a few levels).
    inputs.append(save(Image.fromarray(scene(64, 64, 3), "RGB"), "in_rgb_64x64.jpg", quality=90))
    inputs.append(save(Image.fromarray(scene(37, 23, 1), "RGB"), "in_rgb444_37x23.jpg", quality=95, subsampling=0))
    inputs.append(save(Image.fromarray(scene(50, 30, 8), "RGB"), "in_progressive_50x30.jpg", quality=80,
                       progressive=True))
    inputs.append(save(Image.fromarray(scene(45, 31, 5)[:, :, 1], "L"), "in_grey_45x31.jpg", quality=90))

    manifest = []
    decoded = {}
    for name in inputs:
        im = Image.open(os.path.join(OUT, name))
        rgb = im.convert("RGB")
        decoded[name] = rgb
        if im.mode == "RGB" and im.format == "PNG":
            ref = name  # Pillow's decode is the file itself: the hash below proves it, no copy needed
        else:
            ref = "ref_decode_" + name.replace(".", "_") + ".png"
            rgb.save(os.path.join(OUT, ref), optimize=True)
        manifest.append("decode %s %s %d %d %s" % (name, ref, rgb.width, rgb.height, fnv1a64(rgb.tobytes())))

    resizes = [
        ("in_rgb_37x23.png", (224, 224)),    # upscale, odd -> square
        ("in_rgb_37x23.png", (50, 80)),      # upscale, non-square target
        ("in_rgb_300x200.png", (64, 64)),    # downscale (support widened)
        ("in_rgb_300x200.png", (7, 5)),      # strong downscale: a wide kernel
        ("in_rgb_300x200.png", (224, 224)),  # down in x, up in y
        ("in_rgb_300x200.png", (100, 30)),   # non-square target
        ("in_rgb_64x64.png", (17, 17)),      # square downscale to an odd size
        ("in_rgb_64x64.png", (17, 64)),      # width only: the vertical pass is skipped
        ("in_rgb_64x64.png", (64, 100)),     # height only: the horizontal pass is skipped
        ("in_rgb_1x7.png", (3, 4)),          # a one-pixel-wide input
        ("in_grey_45x31.png", (32, 32)),
        ("in_rgba_40x40.png", (29, 51)),
        ("in_palette_33x21.png", (64, 64)),
        ("in_rgb_64x64.jpg", (96, 80)),      # from Pillow's decode of a JPEG
    ]
    for name, (w, h) in resizes:
        out = decoded[name].resize((w, h), Image.BICUBIC)
        ref = "ref_resize_%s_%dx%d.png" % (name.replace(".", "_"), w, h)
        out.save(os.path.join(OUT, ref), optimize=True)
        manifest.append("resize %s %d %d %s %s" % (name, w, h, ref, fnv1a64(out.tobytes())))

    # The eval transform, as LAVIS's BlipImageEvalProcessor computes it (Resize((S, S), BICUBIC) on the PIL
    # image, ToTensor: uint8 -> float32 / 255, Normalize: (x - mean) / std in float32).
    name, s = "in_rgb_37x23.png", 48
    x = np.asarray(decoded[name].resize((s, s), Image.BICUBIC), dtype=np.uint8)
    t = x.astype(np.float32) / np.float32(255)
    t = (t - CLIP_MEAN) / CLIP_STD
    t = np.ascontiguousarray(t.transpose(2, 0, 1)).astype("<f4")  # (3, S, S)
    fname = "transform_%s_%d.f32" % (name.replace(".", "_"), s)
    t.tofile(os.path.join(OUT, fname))
    manifest.append("transform %s %d %s" % (name, s, fname))

    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("# written by tests/make_image_fixtures.py (Pillow %s); see its header\n" % Image.__version__)
        f.write("\n".join(manifest) + "\n")

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, to %s" % (len(os.listdir(OUT)), total, OUT))
    assert total < 500_000, "image fixtures must stay well under 500 KB"


def fuzz_seeds():
    """Seeds for tests/fuzz/fuzz_image.cpp: tiny PNGs of every colour type Pillow writes and tiny JPEGs
    (baseline 4:2:0 and 4:4:4, progressive, greyscale), each a few hundred bytes. The regress_*.jpg seeds
    beside them are inputs the fuzzer found (see tests/fuzz/fuzz_image.cpp): kept, not generated."""
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "corpus_image")
    os.makedirs(out, exist_ok=True)
    rgb = scene(9, 6, 11)
    Image.fromarray(rgb, "RGB").save(os.path.join(out, "rgb_9x6.png"))
    Image.fromarray(rgb[:, :, 0], "L").save(os.path.join(out, "grey_9x6.png"))
    Image.fromarray(np.dstack([rgb[:, :, 0], rgb[:, :, 1]]), "LA").save(os.path.join(out, "grey_alpha_9x6.png"))
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA").save(os.path.join(out, "rgba_9x6.png"))
    Image.fromarray(rgb, "RGB").quantize(colors=4).save(os.path.join(out, "palette_9x6.png"), transparency=1)
    Image.fromarray(rgb[:, :, 0] > 128).save(os.path.join(out, "bilevel_9x6.png"))
    Image.fromarray(rgb[:, :, 0].astype(np.int32) * 200, "I").save(os.path.join(out, "grey16_9x6.png"))
    Image.fromarray(scene(17, 9, 12), "RGB").save(os.path.join(out, "rgb420_17x9.jpg"), quality=75)
    Image.fromarray(scene(17, 9, 12), "RGB").save(os.path.join(out, "rgb444_17x9.jpg"), quality=75, subsampling=0)
    Image.fromarray(scene(17, 9, 12), "RGB").save(os.path.join(out, "progressive_17x9.jpg"), quality=75,
                                                  progressive=True)
    Image.fromarray(rgb[:, :, 1], "L").save(os.path.join(out, "grey_9x6.jpg"), quality=75)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print("%d fuzz seeds, %d bytes, in %s" % (len(os.listdir(out)), total, out))


if __name__ == "__main__":
    main()
    fuzz_seeds()
