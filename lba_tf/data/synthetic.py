"""The built-in synthetic dataset: procedurally drawn persons seen by RGB and IR cameras.

Each identity has stable attributes: build, head size, skin and hair, a top (solid, striped or
checked; long or short sleeves), trousers, shorts or a skirt, shoes and maybe a bag, and, for the
infrared cameras, a "temperature" per garment that follows its dye, not its brightness. Each image draws
its own pose, view (front or back), mirror, background clutter, lighting and detector-like crop
(scale and position jitter). RGB cameras render colours with a colour cast, shading and light
noise; IR cameras render temperatures as gray levels with no hue, automatic gain, stronger blur
and column noise, so the IR image is not a function of the RGB one. The set is written in the
SYSU-MM01 layout (``cam1``..``cam6/<pid:04d>/<nnnn>.jpg`` and ``exp/*_id.txt``) and read by the
SYSU-MM01 reader; the same seed gives byte-identical files.

Usage::

    python -m lba_tf.data.synthetic --out data/synthetic --num-train-ids 64 --seed 0
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lba_tf.config import ConfigError, SyntheticConfig, load_config
from lba_tf.data.datasets.sysu import IR_CAMERAS, RGB_CAMERAS
from lba_tf.log import logger, setup_logging

GENERATOR_VERSION = 3
"""Bumped whenever the drawing changes, so cached sets are regenerated."""

JPEG_QUALITY = 92
IR_MID_LEVEL = 110.0
"""The gray level an infrared camera's gain control keeps fixed."""
MANIFEST = "synthetic.json"

# Labels of the part map an image is drawn into; each modality colours them in its own way.
WALL, FLOOR, CLUTTER = 0, 1, 2  # clutter objects take labels 2 .. 2 + MAX_CLUTTER - 1
MAX_CLUTTER = 8
HAIR, SKIN, TOP, TOP_PATTERN, BOTTOM, BOTTOM_PATTERN, SHOES, BAG = range(10, 18)
NUM_LABELS = 18

PATTERNS = ("solid", "horizontal_stripes", "vertical_stripes", "checks")


@dataclasses.dataclass(frozen=True)
class Garment:
    """A piece of clothing: colours, pattern and infrared temperature.

    Args:
        colour: RGB in [0, 255], shape ``[3]``.
        second_colour: RGB of the pattern's second colour.
        pattern: one of :data:`PATTERNS`.
        period: stripe or check width, as a fraction of the person's height.
        temperature: the infrared gray level of the fabric (see :func:`infrared_level`).
        pattern_temperature: the gray level of the pattern's second colour.
    """

    colour: tuple[float, float, float]
    second_colour: tuple[float, float, float]
    pattern: str
    period: float
    temperature: float
    pattern_temperature: float


@dataclasses.dataclass(frozen=True)
class Identity:
    """What stays the same in every image of one person."""

    width: float
    head: float
    legs: float
    skin: tuple[float, float, float]
    skin_temperature: float
    hair: tuple[float, float, float]
    hair_temperature: float
    long_hair: bool
    top: Garment
    long_sleeves: bool
    bottom: Garment
    bottom_kind: str
    shoes: tuple[float, float, float]
    shoes_temperature: float
    bag: str
    bag_colour: tuple[float, float, float]
    bag_temperature: float


@dataclasses.dataclass(frozen=True)
class CameraStyle:
    """What stays the same in every image of one camera."""

    infrared: bool
    horizon: float
    wall: tuple[float, float, float]
    floor: tuple[float, float, float]
    hue: float
    ambient: float
    gain: tuple[float, float, float]
    light_top: float
    light_bottom: float
    blur: float
    noise: float
    column_noise: tuple[float, ...]
    """Fixed-pattern offset of each column (infrared sensors), repeated to the image width."""


@dataclasses.dataclass(frozen=True)
class Pose:
    """What changes from image to image: framing, posture, view and mirror."""

    height: float
    top: float
    centre: float
    arms: tuple[float, float]
    feet: tuple[float, float]
    back_view: bool
    mirror: bool


def _hsv(rng: np.random.Generator, saturation=(0.2, 0.9), value=(0.15, 0.95), hue=None):
    h = rng.uniform(0.0, 1.0) if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value))
    return tuple(255.0 * c for c in rgb)


def infrared_level(colour: tuple[float, float, float], rng: np.random.Generator) -> float:
    """The gray level of a dyed fabric under an infrared camera.

    Dyes reflect near-infrared according to their chemistry, not their visible brightness: the
    level is a fixed, non-monotonic function of the dye's hue, scaled by its saturation (an
    undyed, grey fabric sits mid-range), plus a fabric's own variation. Brightness plays no part,
    so a dark and a light garment of the same dye look alike in infrared.
    """
    hue, saturation, _ = colorsys.rgb_to_hsv(*(c / 255.0 for c in colour))
    return 140.0 + 65.0 * saturation * float(np.sin(4.0 * np.pi * hue + 0.7)) + rng.uniform(-12.0, 12.0)


def _garment(rng: np.random.Generator, patterns: tuple[str, ...], weights: tuple[float, ...]) -> Garment:
    colour, second_colour = _hsv(rng), _hsv(rng)
    return Garment(
        colour=colour,
        second_colour=second_colour,
        pattern=str(rng.choice(patterns, p=weights)),
        period=rng.uniform(0.035, 0.09),
        temperature=infrared_level(colour, rng),
        pattern_temperature=infrared_level(second_colour, rng),
    )


def draw_identity(rng: np.random.Generator) -> Identity:
    """Draw the stable attributes of one person."""
    skin = colorsys.hsv_to_rgb(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    return Identity(
        width=rng.uniform(0.8, 1.25),
        head=rng.uniform(0.055, 0.07),
        legs=rng.uniform(0.44, 0.5),
        skin=tuple(255.0 * c for c in skin),
        skin_temperature=rng.uniform(190.0, 235.0),
        hair=_hsv(rng, saturation=(0.1, 0.6), value=(0.05, 0.6)),
        hair_temperature=rng.uniform(110.0, 150.0),
        long_hair=bool(rng.random() < 0.35),
        top=_garment(rng, PATTERNS, (0.4, 0.25, 0.15, 0.2)),
        long_sleeves=bool(rng.random() < 0.5),
        bottom=_garment(rng, ("solid", "checks"), (0.85, 0.15)),
        bottom_kind=str(rng.choice(("trousers", "shorts", "skirt"), p=(0.6, 0.2, 0.2))),
        shoes=_hsv(rng, value=(0.05, 0.8)),
        shoes_temperature=rng.uniform(70.0, 110.0),
        bag=str(rng.choice(("none", "backpack", "handbag"), p=(0.5, 0.3, 0.2))),
        bag_colour=_hsv(rng),
        bag_temperature=rng.uniform(60.0, 130.0),
    )


def camera_style(rng: np.random.Generator, infrared: bool, outdoor: bool) -> CameraStyle:
    """Draw the look of one camera: background, lighting, optics and sensor noise."""
    hue = rng.uniform(0.0, 1.0)
    return CameraStyle(
        infrared=infrared,
        horizon=rng.uniform(0.45, 0.75),
        wall=_hsv(rng, saturation=(0.05, 0.4), value=(0.4, 0.9), hue=hue),
        floor=_hsv(rng, saturation=(0.05, 0.3), value=(0.2, 0.6), hue=hue + 0.5),
        hue=hue,
        ambient=rng.uniform(40.0, 70.0) if outdoor else rng.uniform(80.0, 110.0),
        gain=tuple(rng.uniform(0.85, 1.15, 3)),
        light_top=rng.uniform(1.0, 1.15),
        light_bottom=rng.uniform(0.75, 0.95),
        blur=rng.uniform(0.9, 1.4) if infrared else rng.uniform(0.3, 0.7),
        noise=rng.uniform(5.0, 9.0) if infrared else rng.uniform(2.0, 5.0),
        column_noise=tuple(rng.normal(0.0, 4.0, 512)) if infrared else (),
    )


def draw_pose(rng: np.random.Generator, height: int, width: int) -> Pose:
    """Draw the per-image framing (a jittered detector crop), posture, view and mirror."""
    person = height * rng.uniform(0.72, 1.0)
    return Pose(
        height=person,
        top=rng.uniform(-0.05 * height, height - person + 0.05 * height),
        centre=width * (0.5 + rng.uniform(-0.1, 0.1)),
        arms=tuple(rng.uniform(0.03, 0.35, 2)),
        feet=tuple(rng.uniform(0.0, 0.06, 2)),
        back_view=bool(rng.random() < 0.4),
        mirror=bool(rng.random() < 0.5),
    )


def _line(draw: ImageDraw.ImageDraw, start, end, thickness: float, label: int) -> None:
    draw.line([start, end], fill=label, width=max(1, round(thickness)))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, height: int, width: int) -> int:
    count = int(rng.integers(2, MAX_CLUTTER + 1))
    for i in range(count):
        w, h = width * rng.uniform(0.1, 0.6), height * rng.uniform(0.05, 0.5)
        x, y = rng.uniform(-0.2 * width, 1.2 * width), rng.uniform(0.0, height)
        box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        (draw.rectangle if rng.random() < 0.6 else draw.ellipse)(box, fill=CLUTTER + i)
    return count


def draw_parts(
    identity: Identity, pose: Pose, rng: np.random.Generator, height: int, width: int, horizon: float
) -> tuple[np.ndarray, int]:
    """Draw the part map of one image: background, clutter and the person.

    Returns:
        The labels ``[H, W]`` (uint8, see the label constants) and the number of clutter objects.
    """
    image = Image.new("L", (width, height), WALL)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, horizon * height, width, height], fill=FLOOR)
    count = _clutter(draw, rng, height, width)

    h, y0, cx = pose.height, pose.top, pose.centre
    head_y, head_ry = y0 + identity.head * h, identity.head * h
    head_rx = 0.78 * head_ry
    shoulder_y = y0 + 2 * head_ry + 0.015 * h
    hip_y = y0 + (1 - identity.legs) * h
    shoulder, hip = 0.115 * h * identity.width, 0.085 * h * identity.width
    foot_y, leg_w = y0 + h - 0.035 * h, 0.055 * h * identity.width

    if identity.long_hair:
        draw.rectangle([cx - 1.15 * head_rx, head_y, cx + 1.15 * head_rx, shoulder_y + 0.08 * h], fill=HAIR)
    knee_y = (hip_y + foot_y) / 2
    for side, spread in zip((-1, 1), pose.feet):
        hip_x, foot_x = cx + side * 0.45 * hip, cx + side * (0.45 * hip + spread * h)
        knee_x = (hip_x + foot_x) / 2
        upper = SKIN if identity.bottom_kind == "skirt" else BOTTOM
        lower = BOTTOM if identity.bottom_kind == "trousers" else SKIN
        _line(draw, (hip_x, hip_y), (knee_x, knee_y), leg_w, upper)
        _line(draw, (knee_x, knee_y), (foot_x, foot_y), 0.85 * leg_w, lower)
        draw.ellipse([foot_x - 0.9 * leg_w, foot_y - 0.01 * h, foot_x + 0.9 * leg_w, y0 + h], fill=SHOES)
    draw.rectangle([cx - hip, hip_y - 0.03 * h, cx + hip, hip_y + 0.05 * h], fill=BOTTOM)
    if identity.bottom_kind == "skirt":
        draw.polygon(
            [
                (cx - hip, hip_y - 0.02 * h),
                (cx + hip, hip_y - 0.02 * h),
                (cx + 1.5 * hip, hip_y + 0.22 * h),
                (cx - 1.5 * hip, hip_y + 0.22 * h),
            ],
            fill=BOTTOM,
        )
    draw.polygon(
        [(cx - shoulder, shoulder_y), (cx + shoulder, shoulder_y), (cx + hip, hip_y), (cx - hip, hip_y)], fill=TOP
    )
    arm_len, arm_w = 0.36 * h, 0.04 * h * identity.width
    for side, angle in zip((-1, 1), pose.arms):
        start = (cx + side * (shoulder - 0.5 * arm_w), shoulder_y + 0.5 * arm_w)
        elbow = (start[0] + side * np.sin(angle) * arm_len / 2, start[1] + np.cos(angle) * arm_len / 2)
        hand = (start[0] + side * np.sin(angle) * arm_len, start[1] + np.cos(angle) * arm_len)
        _line(draw, start, elbow, arm_w, TOP)
        _line(draw, elbow, hand, 0.9 * arm_w, TOP if identity.long_sleeves else SKIN)
        draw.ellipse(
            [hand[0] - 0.6 * arm_w, hand[1] - 0.6 * arm_w, hand[0] + 0.6 * arm_w, hand[1] + 0.6 * arm_w], fill=SKIN
        )
        if identity.bag == "handbag" and side == 1:
            draw.rectangle([hand[0] - 0.05 * h, hand[1], hand[0] + 0.05 * h, hand[1] + 0.09 * h], fill=BAG)
    if identity.bag == "backpack":
        if pose.back_view:
            draw.rectangle(
                [cx - 0.8 * shoulder, shoulder_y + 0.03 * h, cx + 0.8 * shoulder, hip_y - 0.02 * h], fill=BAG
            )
        else:
            for side in (-1, 1):
                strap = [(cx + side * 0.6 * shoulder, shoulder_y), (cx + side * 0.7 * hip, hip_y - 0.05 * h)]
                _line(draw, *strap, max(1.0, 0.015 * h), BAG)
    head = [cx - head_rx, y0, cx + head_rx, y0 + 2 * head_ry]
    draw.ellipse(head, fill=HAIR if pose.back_view else SKIN)
    if not pose.back_view:
        draw.chord(
            [head[0] - 0.05 * head_rx, head[1] - 0.05 * head_ry, head[2] + 0.05 * head_rx, head[1] + 1.3 * head_ry],
            180,
            360,
            fill=HAIR,
        )

    labels = np.asarray(image).copy()
    _apply_pattern(labels, TOP, TOP_PATTERN, identity.top, pose)
    _apply_pattern(labels, BOTTOM, BOTTOM_PATTERN, identity.bottom, pose)
    if pose.mirror:
        labels = labels[:, ::-1].copy()
    return labels, count


def _apply_pattern(labels: np.ndarray, part: int, pattern_label: int, garment: Garment, pose: Pose) -> None:
    """Relabel the pattern's second-colour pixels of ``part``, in person-relative coordinates."""
    if garment.pattern == "solid":
        return
    rows, cols = np.nonzero(labels == part)
    period = garment.period * pose.height
    v = np.floor((rows - pose.top) / period).astype(np.int64)
    u = np.floor((cols - pose.centre) / period).astype(np.int64)
    second = {"horizontal_stripes": v, "vertical_stripes": u, "checks": u + v}[garment.pattern] % 2 == 1
    labels[rows[second], cols[second]] = pattern_label


def _rgb_table(identity: Identity, style: CameraStyle, rng: np.random.Generator, count: int) -> np.ndarray:
    table = np.zeros((NUM_LABELS, 3), np.float32)
    table[WALL], table[FLOOR] = style.wall, style.floor
    for i in range(count):
        hue = style.hue + rng.uniform(-0.15, 0.15) if rng.random() < 0.7 else None
        table[CLUTTER + i] = _hsv(rng, saturation=(0.05, 0.6), value=(0.2, 0.9), hue=hue)
    table[HAIR], table[SKIN], table[SHOES], table[BAG] = (
        identity.hair,
        identity.skin,
        identity.shoes,
        identity.bag_colour,
    )
    table[TOP], table[TOP_PATTERN] = identity.top.colour, identity.top.second_colour
    table[BOTTOM], table[BOTTOM_PATTERN] = identity.bottom.colour, identity.bottom.second_colour
    table[HAIR:] += rng.normal(0.0, 6.0, (NUM_LABELS - HAIR, 3))
    return table


def _ir_table(identity: Identity, style: CameraStyle, rng: np.random.Generator, count: int) -> np.ndarray:
    table = np.zeros(NUM_LABELS, np.float32)
    table[WALL] = style.ambient + rng.normal(0.0, 5.0)
    table[FLOOR] = style.ambient - 10.0 + rng.normal(0.0, 5.0)
    for i in range(count):
        hot = rng.random() < 0.1
        table[CLUTTER + i] = rng.uniform(170.0, 230.0) if hot else style.ambient + rng.normal(0.0, 12.0)
    table[HAIR], table[SKIN] = identity.hair_temperature, identity.skin_temperature
    table[SHOES], table[BAG] = identity.shoes_temperature, identity.bag_temperature
    table[TOP], table[TOP_PATTERN] = identity.top.temperature, identity.top.pattern_temperature
    table[BOTTOM], table[BOTTOM_PATTERN] = identity.bottom.temperature, identity.bottom.pattern_temperature
    table[HAIR:] += rng.normal(0.0, 6.0, NUM_LABELS - HAIR)
    return table


def render_image(
    identity: Identity, style: CameraStyle, rng: np.random.Generator, height: int, width: int
) -> Image.Image:
    """Render one image of ``identity`` by a camera of ``style``.

    Returns:
        An RGB ``[H, W, 3]`` image, or a grayscale ``[H, W]`` one for an infrared camera.
    """
    pose = draw_pose(rng, height, width)
    labels, count = draw_parts(identity, pose, rng, height, width, style.horizon)
    shade = np.linspace(style.light_top, style.light_bottom, height, dtype=np.float32)[:, None]
    if style.infrared:  # automatic gain control: a random contrast and level per image
        pixels = _ir_table(identity, style, rng, count)[labels]
        pixels = (pixels - IR_MID_LEVEL) * rng.uniform(0.85, 1.15) + IR_MID_LEVEL + rng.uniform(-15.0, 15.0)
    else:  # light from above, a per-image exposure and the camera's colour cast
        pixels = _rgb_table(identity, style, rng, count)[labels]
        pixels *= (shade * rng.uniform(0.8, 1.2))[..., None] * np.asarray(style.gain, np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    pixels = np.array(image.filter(ImageFilter.GaussianBlur(style.blur)), np.float32)
    pixels += style.noise * rng.standard_normal(pixels.shape, dtype=np.float32)
    if style.column_noise:
        pixels += np.resize(np.asarray(style.column_noise, np.float32), width)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def split_identities(config: SyntheticConfig) -> dict[str, list[int]]:
    """The ``train``, ``val`` and ``test`` pids (disjoint, together 1..train + test ids)."""
    pids = np.random.default_rng([config.seed, 0]).permutation(
        np.arange(1, config.num_train_ids + config.num_test_ids + 1)
    )
    test, train = pids[: config.num_test_ids], pids[config.num_test_ids :]
    num_val = max(1, config.num_train_ids // 4)
    return {
        "train": sorted(int(p) for p in train[num_val:]),
        "val": sorted(int(p) for p in train[:num_val]),
        "test": sorted(int(p) for p in test),
    }


def identity_cameras(seed: int, pid: int) -> list[str]:
    """The cameras that see ``pid``: some of each modality, always an indoor RGB camera."""
    rng = np.random.default_rng([seed, 4, pid])
    cameras = [c for c in RGB_CAMERAS["all"] + IR_CAMERAS if rng.random() < 0.8]
    for group in (RGB_CAMERAS["indoor"], IR_CAMERAS):
        if not set(group) & set(cameras):
            cameras.append(group[int(rng.integers(len(group)))])
    return sorted(cameras)


def generate(out_dir: str, config: SyntheticConfig) -> str:
    """Write the synthetic dataset of ``config`` to ``out_dir`` (created; must be empty if it exists).

    Args:
        out_dir: the dataset folder to write.
        config: sizes and seed.

    Returns:
        ``out_dir``.
    """
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir}: not empty; the synthetic set is written to a new folder")
    splits = split_identities(config)
    os.makedirs(os.path.join(out_dir, "exp"), exist_ok=True)
    for split, pids in splits.items():
        with open(os.path.join(out_dir, "exp", f"{split}_id.txt"), "w") as f:
            f.write(",".join(str(p) for p in pids) + "\n")
    styles = {}
    for camera in RGB_CAMERAS["all"] + IR_CAMERAS:
        number = int(camera[3:])
        styles[camera] = camera_style(
            np.random.default_rng([config.seed, 3, number]), infrared=camera in IR_CAMERAS, outdoor=number in (4, 5, 6)
        )
    for pid in sorted(p for pids in splits.values() for p in pids):
        identity = draw_identity(np.random.default_rng([config.seed, 1, pid]))
        for camera in identity_cameras(config.seed, pid):
            folder = os.path.join(out_dir, camera, f"{pid:04d}")
            os.makedirs(folder)
            for k in range(1, config.images_per_camera + 1):
                rng = np.random.default_rng([config.seed, 2, pid, int(camera[3:]), k])
                image = render_image(identity, styles[camera], rng, config.image_height, config.image_width)
                image.save(os.path.join(folder, f"{k:04d}.jpg"), quality=JPEG_QUALITY)
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(_manifest(config), f, indent=2, sort_keys=True)
    return out_dir


def _manifest(config: SyntheticConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(config)}


def cache_name(config: SyntheticConfig) -> str:
    """The cache folder name of ``config``: a hash of its values and the generator version."""
    digest = hashlib.sha256(json.dumps(_manifest(config), sort_keys=True).encode()).hexdigest()
    return f"sysu-layout-{digest[:16]}"


def ensure_synthetic(config: SyntheticConfig, cache_dir: str) -> str:
    """The synthetic dataset of ``config`` under ``cache_dir``, generated there on first use.

    Generation writes to a temporary folder beside the final one and renames it, so a crashed
    or concurrent run never leaves a half-written set under the final name.

    Args:
        config: sizes and seed.
        cache_dir: the folder holding generated sets, one per distinct ``config``.

    Returns:
        The dataset folder.
    """
    final = os.path.join(cache_dir, cache_name(config))
    if os.path.isdir(final):
        return final
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{cache_name(config)}-", dir=cache_dir)
    try:
        start = time.perf_counter()
        generate(tmp, config)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):  # not a concurrent run that finished first
                raise
        else:
            logger.info("generated the synthetic dataset in %s (%.1f s)", final, time.perf_counter() - start)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return final


_OPTIONS = {
    "num_train_ids": int,
    "num_test_ids": int,
    "images_per_camera": int,
    "image_height": int,
    "image_width": int,
    "seed": int,
}
_FLAGS = {"image_height": "--height", "image_width": "--width"}


def main(argv: list[str] | None = None) -> None:
    """Command line: write the synthetic dataset to ``--out``; sizes default to the config's."""
    parser = argparse.ArgumentParser(prog="python -m lba_tf.data.synthetic", description=main.__doc__)
    parser.add_argument("--out", required=True, help="the dataset folder to create")
    for key, kind in _OPTIONS.items():
        flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
        parser.add_argument(
            flag, dest=key, type=kind, default=None, help=f"data.synthetic.{key} (default: configs/synthetic.yaml)"
        )
    args = parser.parse_args(argv)
    setup_logging()
    overrides = [f"data.synthetic.{k}={getattr(args, k)}" for k in _OPTIONS if getattr(args, k) is not None]
    start = time.perf_counter()
    try:
        config = load_config(None, overrides).data.synthetic
        generate(args.out, config)
    except (ConfigError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    seconds = time.perf_counter() - start
    logger.info("wrote the synthetic dataset (%s) to %s in %.1f s", config, args.out, seconds)


if __name__ == "__main__":
    main()
