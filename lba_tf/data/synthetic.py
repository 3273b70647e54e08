"""The built-in synthetic dataset: procedurally drawn persons seen by RGB and IR cameras.

What makes a person recognisable across the two modalities is their *structure*, which an
infrared camera keeps: build (shoulder width, leg length, head size), hair style or a cap, the
kind and length of the top (tank top, T-shirt, long sleeves, a coat down to the thighs), its
pattern (solid, horizontal or vertical stripes, checks, a chest band, diagonals; fine or wide),
the bottom (trousers, shorts, a skirt, a long skirt), shoes or boots and a bag (backpack,
handbag, shoulder bag). Colours are identity cues too, but only in RGB: under infrared each fabric
has a gray level that follows its dye's chemistry, not its visible brightness (see
:func:`infrared_level`), and a pattern's two yarns are chosen to contrast in both modalities.
Every identity of a set differs from every other in at least one structural cue or in build
(:func:`draw_identities`), so infrared-to-visible matching is learnable, but none is revealed by a
constant: colours, gray levels and every per-image draw vary.

Each image draws its own detector-like crop (the person's scale and position jitter), posture
(arms, stride), view (front or back, where a backpack shows whole), mirror, background clutter,
lighting and, in some images, an occluder in front of the person, so features of one body part sit
at different places in different images: dense alignment has something to align. RGB cameras
render colours with a colour cast, shading and light noise; IR cameras render gray levels with
automatic gain, stronger blur and column noise, so the IR image is not a function of the RGB one.
The set is written in the SYSU-MM01 layout (``cam1``..``cam6/<pid:04d>/<nnnn>.jpg`` and
``exp/*_id.txt``) and read by the SYSU-MM01 reader; the same seed gives byte-identical files.

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
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lba_tf.config import ConfigError, SyntheticConfig, load_config
from lba_tf.data.datasets.sysu import IR_CAMERAS, RGB_CAMERAS
from lba_tf.log import logger, setup_logging

GENERATOR_VERSION = 4
"""Bumped whenever the drawing changes, so cached sets are regenerated."""

JPEG_QUALITY = 92
IR_MID_LEVEL = 110.0
"""The gray level an infrared camera's gain control keeps fixed."""
MANIFEST = "synthetic.json"

# Labels of the part map an image is drawn into; each modality colours them in its own way.
WALL, FLOOR, CLUTTER = 0, 1, 2  # clutter objects take labels 2 .. 2 + MAX_CLUTTER - 1
MAX_CLUTTER = 8
HAIR, SKIN, TOP, TOP_PATTERN, BOTTOM, BOTTOM_PATTERN, SHOES, BAG, HAT, OCCLUDER = range(10, 20)
NUM_LABELS = 20
PERSON_LABELS = (HAIR, SKIN, TOP, TOP_PATTERN, BOTTOM, BOTTOM_PATTERN, SHOES, BAG, HAT)

HAIR_STYLES = ("short", "long", "bun", "cap")
TOP_KINDS = ("tank", "tshirt", "long_sleeves", "coat")
TOP_PATTERNS = ("solid", "horizontal_stripes", "vertical_stripes", "checks", "band", "diagonal")
BOTTOM_KINDS = ("trousers", "shorts", "skirt", "long_skirt")
BOTTOM_PATTERNS = ("solid", "checks", "side_stripe")
SHOE_KINDS = ("shoes", "boots")
BAGS = ("none", "backpack", "handbag", "shoulder_bag")
PERIODS = {"fine": 0.045, "wide": 0.075}
"""Stripe and check widths, as fractions of the person's height."""
BUILDS = (0.78, 0.96, 1.12, 1.3)
"""Edges of the build classes (shoulder and hip width factors) that tell identities apart."""

MIN_PATTERN_CONTRAST = 45.0
"""The least infrared gray-level difference between a pattern's two yarns, and between top and bottom."""


@dataclasses.dataclass(frozen=True)
class Garment:
    """A piece of clothing: colours, pattern and infrared gray levels.

    Args:
        colour: RGB in [0, 255], shape ``[3]``.
        second_colour: RGB of the pattern's second colour.
        pattern: one of :data:`TOP_PATTERNS` or :data:`BOTTOM_PATTERNS`.
        period: one of :data:`PERIODS` (``"none"`` for a solid garment).
        temperature: the infrared gray level of the fabric (see :func:`infrared_level`).
        pattern_temperature: the gray level of the pattern's second colour.
    """

    colour: tuple[float, float, float]
    second_colour: tuple[float, float, float]
    pattern: str
    period: str
    temperature: float
    pattern_temperature: float


@dataclasses.dataclass(frozen=True)
class Identity:
    """What stays the same in every image of one person.

    ``width``, ``head``, ``legs`` and the ``*_kind``/``*_style``/``bag`` fields and the garments'
    patterns are the structure both modalities show; colours show in RGB only, ``*temperature``
    fields are infrared gray levels.
    """

    width: float
    head: float
    legs: float
    hair_style: str
    top_kind: str
    bottom_kind: str
    shoe_kind: str
    bag: str
    top: Garment
    bottom: Garment
    skin: tuple[float, float, float]
    skin_temperature: float
    hair: tuple[float, float, float]
    hair_temperature: float
    hat: tuple[float, float, float]
    hat_temperature: float
    shoes: tuple[float, float, float]
    shoes_temperature: float
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
    """What changes from image to image: framing, posture, view, mirror and occlusion.

    ``occluder`` is ``None`` or a box ``(x0, y0, x1, y1)`` in pixels of something in front of
    the person (drawn before the mirror).
    """

    height: float
    top: float
    centre: float
    arms: tuple[float, float]
    feet: tuple[float, float]
    back_view: bool
    mirror: bool
    occluder: tuple[float, float, float, float] | None


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
    return 135.0 + 85.0 * saturation * float(np.sin(4.0 * np.pi * hue + 0.7)) + rng.uniform(-15.0, 15.0)


def _contrasting_colour(
    rng: np.random.Generator, level: float, colour: tuple[float, float, float]
) -> tuple[tuple[float, float, float], float]:
    """A colour that differs from ``colour`` in brightness and whose infrared level differs from ``level``.

    Drawn until both hold (a few draws on average); the last draw is kept if none does in 64.
    """
    value = max(colour) / 255.0
    for _ in range(64):
        candidate = _hsv(rng)
        candidate_level = infrared_level(candidate, rng)
        if abs(candidate_level - level) >= MIN_PATTERN_CONTRAST and abs(max(candidate) / 255.0 - value) >= 0.25:
            break
    return candidate, candidate_level


def _garment(rng: np.random.Generator, patterns: tuple[str, ...], weights: tuple[float, ...], avoid=None) -> Garment:
    """One garment; with ``avoid`` (a gray level), one whose infrared level differs from it."""
    for _ in range(64):
        colour = _hsv(rng)
        temperature = infrared_level(colour, rng)
        if avoid is None or abs(temperature - avoid) >= MIN_PATTERN_CONTRAST:
            break
    pattern = str(rng.choice(patterns, p=weights))
    second_colour, pattern_temperature = _contrasting_colour(rng, temperature, colour)
    period = "none" if pattern == "solid" else str(rng.choice(sorted(PERIODS)))
    return Garment(colour, second_colour, pattern, period, temperature, pattern_temperature)


def draw_identity(rng: np.random.Generator) -> Identity:
    """Draw the stable attributes of one person."""
    skin = colorsys.hsv_to_rgb(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    top = _garment(rng, TOP_PATTERNS, (0.25, 0.17, 0.15, 0.15, 0.14, 0.14))
    bottom = _garment(rng, BOTTOM_PATTERNS, (0.7, 0.15, 0.15), avoid=top.temperature)
    hat = _hsv(rng)
    top_kind = str(rng.choice(TOP_KINDS, p=(0.2, 0.3, 0.3, 0.2)))
    # A coat reaches below shorts and a skirt: it comes with trousers or a long skirt, so that
    # the bottom's kind and pattern show in every image.
    bottoms = (0.6, 0.0, 0.0, 0.4) if top_kind == "coat" else (0.4, 0.2, 0.2, 0.2)
    return Identity(
        width=rng.uniform(BUILDS[0], BUILDS[-1]),
        head=rng.uniform(0.055, 0.075),
        legs=rng.uniform(0.42, 0.52),
        hair_style=str(rng.choice(HAIR_STYLES, p=(0.35, 0.3, 0.15, 0.2))),
        top_kind=top_kind,
        bottom_kind=str(rng.choice(BOTTOM_KINDS, p=bottoms)),
        shoe_kind=str(rng.choice(SHOE_KINDS, p=(0.7, 0.3))),
        bag=str(rng.choice(BAGS, p=(0.4, 0.2, 0.2, 0.2))),
        top=top,
        bottom=bottom,
        skin=tuple(255.0 * c for c in skin),
        skin_temperature=rng.uniform(195.0, 240.0),
        hair=_hsv(rng, saturation=(0.1, 0.6), value=(0.05, 0.6)),
        hair_temperature=rng.uniform(95.0, 140.0),
        hat=hat,
        hat_temperature=infrared_level(hat, rng),
        shoes=_hsv(rng, value=(0.05, 0.8)),
        shoes_temperature=rng.uniform(50.0, 100.0),
        bag_colour=_hsv(rng),
        bag_temperature=rng.uniform(40.0, 160.0),
    )


def structure(identity: Identity) -> tuple:
    """The cues of ``identity`` that both modalities show, as a hashable key.

    The build enters as its class (:data:`BUILDS`); two identities with the same key differ only
    in colours, gray levels and build within a class.
    """
    build = int(np.searchsorted(BUILDS, identity.width, side="right")) - 1
    return (
        identity.hair_style,
        identity.top_kind,
        identity.top.pattern,
        identity.top.period,
        identity.bottom_kind,
        identity.bottom.pattern,
        identity.shoe_kind,
        identity.bag,
        min(build, len(BUILDS) - 2),
    )


def draw_identities(seed: int, pids: Iterable[int], attempts: int = 64) -> dict[int, Identity]:
    """The identities of a set, in pid order, each with a structure no earlier one has.

    An identity whose :func:`structure` an earlier pid took is drawn again (up to ``attempts``
    times; beyond some 20 000 identities structures must repeat and then differ in colours and
    gray levels only).

    Args:
        seed: the set's seed.
        pids: the identities to draw.
        attempts: draws per pid before a repeated structure is accepted.

    Returns:
        ``{pid: Identity}``.
    """
    taken, out = set(), {}
    for pid in sorted(pids):
        for attempt in range(attempts):
            identity = draw_identity(np.random.default_rng([seed, 1, pid, attempt]))
            if structure(identity) not in taken:
                break
        taken.add(structure(identity))
        out[pid] = identity
    return out


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
        blur=rng.uniform(0.7, 1.1) if infrared else rng.uniform(0.3, 0.6),
        noise=rng.uniform(4.0, 7.0) if infrared else rng.uniform(2.0, 5.0),
        column_noise=tuple(rng.normal(0.0, 4.0, 512)) if infrared else (),
    )


def draw_pose(rng: np.random.Generator, height: int, width: int) -> Pose:
    """Draw the per-image framing (a jittered detector crop), posture, view, mirror and occluder."""
    person = height * rng.uniform(0.7, 1.0)
    occluder = None
    if rng.random() < 0.25:
        if rng.random() < 0.5:  # something low in front: a bench, a car bonnet, a railing
            y = height * rng.uniform(0.68, 0.85)
            occluder = (rng.uniform(-0.3, 0.2) * width, y, rng.uniform(0.8, 1.3) * width, height + 1.0)
        else:  # a pillar or a passer-by at one side
            w, left = width * rng.uniform(0.18, 0.32), bool(rng.random() < 0.5)
            x = rng.uniform(-0.1, 0.05) * width if left else width * rng.uniform(0.95, 1.1) - w
            occluder = (x, -1.0, x + w, height + 1.0)
    return Pose(
        height=person,
        top=rng.uniform(-0.04 * height, height - person + 0.04 * height),
        centre=width * (0.5 + rng.uniform(-0.12, 0.12)),
        arms=tuple(rng.uniform(0.03, 0.4, 2)),
        feet=tuple(rng.uniform(0.0, 0.08, 2)),
        back_view=bool(rng.random() < 0.4),
        mirror=bool(rng.random() < 0.5),
        occluder=occluder,
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


@dataclasses.dataclass(frozen=True)
class _Body:
    """Where the body parts of one image are, in pixels."""

    h: float
    y0: float
    cx: float
    head_y: float
    head_rx: float
    head_ry: float
    shoulder_y: float
    hip_y: float
    knee_y: float
    foot_y: float
    shoulder: float
    hip: float
    leg_w: float

    @classmethod
    def of(cls, identity: Identity, pose: Pose) -> _Body:
        h, y0 = pose.height, pose.top
        head_ry = identity.head * h
        shoulder_y = y0 + 2 * head_ry + 0.015 * h
        hip_y = y0 + (1 - identity.legs) * h
        foot_y = y0 + h - 0.035 * h
        return cls(
            h=h,
            y0=y0,
            cx=pose.centre,
            head_y=y0 + head_ry,
            head_rx=0.78 * head_ry,
            head_ry=head_ry,
            shoulder_y=shoulder_y,
            hip_y=hip_y,
            knee_y=(hip_y + foot_y) / 2,
            foot_y=foot_y,
            shoulder=0.115 * h * identity.width,
            hip=0.085 * h * identity.width,
            leg_w=0.055 * h * identity.width,
        )


def _draw_legs(draw: ImageDraw.ImageDraw, identity: Identity, pose: Pose, b: _Body) -> None:
    kind, h = identity.bottom_kind, b.h
    upper = BOTTOM if kind in ("trousers", "shorts") else SKIN
    lower = BOTTOM if kind == "trousers" else SKIN
    for side, spread in zip((-1, 1), pose.feet):
        hip_x, foot_x = b.cx + side * 0.45 * b.hip, b.cx + side * (0.45 * b.hip + spread * h)
        knee_x = (hip_x + foot_x) / 2
        _line(draw, (hip_x, b.hip_y), (knee_x, b.knee_y), b.leg_w, upper)
        _line(draw, (knee_x, b.knee_y), (foot_x, b.foot_y), 0.85 * b.leg_w, lower)
        if identity.shoe_kind == "boots":
            draw.rectangle([foot_x - 0.55 * b.leg_w, b.foot_y - 0.1 * h, foot_x + 0.55 * b.leg_w, b.foot_y], fill=SHOES)
        draw.ellipse([foot_x - 0.9 * b.leg_w, b.foot_y - 0.01 * h, foot_x + 0.9 * b.leg_w, b.y0 + h], fill=SHOES)
    draw.rectangle([b.cx - b.hip, b.hip_y - 0.03 * h, b.cx + b.hip, b.hip_y + 0.05 * h], fill=BOTTOM)
    if kind in ("skirt", "long_skirt"):
        hem = b.hip_y + (0.2 if kind == "skirt" else 0.4) * h
        flare = 1.5 if kind == "skirt" else 1.8
        draw.polygon(
            [
                (b.cx - b.hip, b.hip_y - 0.02 * h),
                (b.cx + b.hip, b.hip_y - 0.02 * h),
                (b.cx + flare * b.hip, hem),
                (b.cx - flare * b.hip, hem),
            ],
            fill=BOTTOM,
        )


def _draw_torso_and_arms(draw: ImageDraw.ImageDraw, identity: Identity, pose: Pose, b: _Body) -> None:
    h, kind = b.h, identity.top_kind
    if kind == "coat":
        hem = b.hip_y + 0.2 * h
        outline = [(b.cx - b.shoulder, b.shoulder_y), (b.cx + b.shoulder, b.shoulder_y)]
        outline += [(b.cx + 1.2 * b.hip, hem), (b.cx - 1.2 * b.hip, hem)]
    else:
        outline = [(b.cx - b.shoulder, b.shoulder_y), (b.cx + b.shoulder, b.shoulder_y)]
        outline += [(b.cx + b.hip, b.hip_y), (b.cx - b.hip, b.hip_y)]
    draw.polygon(outline, fill=TOP)
    upper = SKIN if kind == "tank" else TOP
    lower = TOP if kind in ("long_sleeves", "coat") else SKIN
    arm_len, arm_w = 0.36 * h, 0.04 * h * identity.width
    for side, angle in zip((-1, 1), pose.arms):
        start = (b.cx + side * (b.shoulder - 0.5 * arm_w), b.shoulder_y + 0.5 * arm_w)
        elbow = (start[0] + side * np.sin(angle) * arm_len / 2, start[1] + np.cos(angle) * arm_len / 2)
        hand = (start[0] + side * np.sin(angle) * arm_len, start[1] + np.cos(angle) * arm_len)
        _line(draw, start, elbow, arm_w, upper)
        _line(draw, elbow, hand, 0.9 * arm_w, lower)
        draw.ellipse(
            [hand[0] - 0.6 * arm_w, hand[1] - 0.6 * arm_w, hand[0] + 0.6 * arm_w, hand[1] + 0.6 * arm_w], fill=SKIN
        )
        if identity.bag == "handbag" and side == 1:
            draw.rectangle([hand[0] - 0.05 * h, hand[1], hand[0] + 0.05 * h, hand[1] + 0.09 * h], fill=BAG)


def _draw_bag(draw: ImageDraw.ImageDraw, identity: Identity, pose: Pose, b: _Body) -> None:
    h, strap = b.h, max(1.0, 0.018 * b.h)
    if identity.bag == "backpack":
        if pose.back_view:
            box = [b.cx - 0.8 * b.shoulder, b.shoulder_y + 0.03 * h, b.cx + 0.8 * b.shoulder, b.hip_y - 0.02 * h]
            draw.rectangle(box, fill=BAG)
        else:
            for side in (-1, 1):
                _line(
                    draw,
                    (b.cx + side * 0.6 * b.shoulder, b.shoulder_y),
                    (b.cx + side * 0.7 * b.hip, b.hip_y - 0.05 * h),
                    strap,
                    BAG,
                )
    elif identity.bag == "shoulder_bag":
        side = 1 if pose.back_view else -1  # the strap crosses the body; the bag hangs at one hip
        _line(draw, (b.cx + side * 0.7 * b.shoulder, b.shoulder_y), (b.cx - side * 1.1 * b.hip, b.hip_y), strap, BAG)
        x = b.cx - side * 1.3 * b.hip
        draw.rectangle([x - 0.055 * h, b.hip_y - 0.04 * h, x + 0.055 * h, b.hip_y + 0.05 * h], fill=BAG)


def _draw_head(draw: ImageDraw.ImageDraw, identity: Identity, pose: Pose, b: _Body) -> None:
    rx, ry, cx, y0 = b.head_rx, b.head_ry, b.cx, b.y0
    if identity.hair_style == "long":
        draw.rectangle([cx - 1.15 * rx, b.head_y, cx + 1.15 * rx, b.shoulder_y + 0.08 * b.h], fill=HAIR)
    head = [cx - rx, y0, cx + rx, y0 + 2 * ry]
    draw.ellipse(head, fill=HAIR if pose.back_view and identity.hair_style != "cap" else SKIN)
    if identity.hair_style == "cap":
        draw.chord([head[0] - 0.05 * rx, y0 - 0.1 * ry, head[2] + 0.05 * rx, y0 + 1.2 * ry], 180, 360, fill=HAT)
        brim = (head[2] + 0.5 * rx) if not pose.back_view else head[2]
        draw.rectangle([head[0] - 0.1 * rx, y0 + 0.45 * ry, brim, y0 + 0.62 * ry], fill=HAT)
        return
    if not pose.back_view:
        draw.chord([head[0] - 0.05 * rx, y0 - 0.05 * ry, head[2] + 0.05 * rx, y0 + 1.3 * ry], 180, 360, fill=HAIR)
    if identity.hair_style == "bun":
        draw.ellipse([cx - 0.5 * rx, y0 - 0.75 * ry, cx + 0.5 * rx, y0 + 0.15 * ry], fill=HAIR)


def draw_parts(
    identity: Identity, pose: Pose, rng: np.random.Generator, height: int, width: int, horizon: float
) -> tuple[np.ndarray, int]:
    """Draw the part map of one image: background, clutter, the person and any occluder.

    Returns:
        The labels ``[H, W]`` (uint8, see the label constants) and the number of clutter objects.
    """
    image = Image.new("L", (width, height), WALL)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, horizon * height, width, height], fill=FLOOR)
    count = _clutter(draw, rng, height, width)
    body = _Body.of(identity, pose)
    _draw_legs(draw, identity, pose, body)
    _draw_torso_and_arms(draw, identity, pose, body)
    _draw_bag(draw, identity, pose, body)
    _draw_head(draw, identity, pose, body)
    labels = np.asarray(image).copy()
    _apply_pattern(labels, TOP, TOP_PATTERN, identity.top, body)
    _apply_pattern(labels, BOTTOM, BOTTOM_PATTERN, identity.bottom, body)
    if pose.occluder is not None:
        occluded = Image.fromarray(labels)
        ImageDraw.Draw(occluded).rectangle(list(pose.occluder), fill=OCCLUDER)
        labels = np.asarray(occluded).copy()
    if pose.mirror:
        labels = labels[:, ::-1].copy()
    return labels, count


def _apply_pattern(labels: np.ndarray, part: int, pattern_label: int, garment: Garment, b: _Body) -> None:
    """Relabel the pattern's second-colour pixels of ``part``, in person-relative coordinates."""
    if garment.pattern == "solid":
        return
    rows, cols = np.nonzero(labels == part)
    period = PERIODS[garment.period] * b.h
    v = np.floor((rows - b.y0) / period).astype(np.int64)
    u = np.floor((cols - b.cx) / period).astype(np.int64)
    if garment.pattern == "band":  # one wide band across the chest
        torso = (rows - b.shoulder_y) / (b.hip_y - b.shoulder_y)
        second = (torso > 0.3) & (torso < 0.3 + 2.5 * PERIODS[garment.period] * b.h / (b.hip_y - b.shoulder_y))
    elif garment.pattern == "side_stripe":  # a stripe down the outside of each leg
        second = np.abs(np.abs(cols - b.cx) - 0.45 * b.hip - 0.3 * b.leg_w) < 0.18 * b.leg_w
    elif garment.pattern == "diagonal":
        second = np.floor((rows - b.y0 + cols - b.cx) / (1.4 * period)).astype(np.int64) % 2 == 1
    else:
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
    table[HAT] = identity.hat
    table[TOP], table[TOP_PATTERN] = identity.top.colour, identity.top.second_colour
    table[BOTTOM], table[BOTTOM_PATTERN] = identity.bottom.colour, identity.bottom.second_colour
    table[list(PERSON_LABELS)] += rng.normal(0.0, 6.0, (len(PERSON_LABELS), 3))
    table[OCCLUDER] = _hsv(rng, saturation=(0.05, 0.6), value=(0.2, 0.9))
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
    table[HAT] = identity.hat_temperature
    table[TOP], table[TOP_PATTERN] = identity.top.temperature, identity.top.pattern_temperature
    table[BOTTOM], table[BOTTOM_PATTERN] = identity.bottom.temperature, identity.bottom.pattern_temperature
    table[list(PERSON_LABELS)] += rng.normal(0.0, 6.0, len(PERSON_LABELS))
    table[OCCLUDER] = style.ambient + rng.uniform(-30.0, 40.0)
    return table


def render_labels(
    identity: Identity, style: CameraStyle, labels: np.ndarray, count: int, rng: np.random.Generator
) -> Image.Image:
    """Colour a part map as a camera of ``style`` sees it.

    Returns:
        An RGB ``[H, W, 3]`` image, or a grayscale ``[H, W]`` one for an infrared camera.
    """
    height, width = labels.shape
    if style.infrared:  # automatic gain control: a random contrast and level per image
        pixels = _ir_table(identity, style, rng, count)[labels]
        pixels = (pixels - IR_MID_LEVEL) * rng.uniform(0.85, 1.15) + IR_MID_LEVEL + rng.uniform(-15.0, 15.0)
    else:  # light from above, a per-image exposure and the camera's colour cast
        shade = np.linspace(style.light_top, style.light_bottom, height, dtype=np.float32)[:, None]
        pixels = _rgb_table(identity, style, rng, count)[labels]
        pixels *= (shade * rng.uniform(0.8, 1.2))[..., None] * np.asarray(style.gain, np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    pixels = np.array(image.filter(ImageFilter.GaussianBlur(style.blur)), np.float32)
    pixels += style.noise * rng.standard_normal(pixels.shape, dtype=np.float32)
    if style.column_noise:
        pixels += np.resize(np.asarray(style.column_noise, np.float32), width)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def render_image(
    identity: Identity, style: CameraStyle, rng: np.random.Generator, height: int, width: int
) -> Image.Image:
    """Render one image of ``identity`` by a camera of ``style``: a pose, its part map, its colours.

    Returns:
        An RGB ``[H, W, 3]`` image, or a grayscale ``[H, W]`` one for an infrared camera.
    """
    pose = draw_pose(rng, height, width)
    labels, count = draw_parts(identity, pose, rng, height, width, style.horizon)
    return render_labels(identity, style, labels, count, rng)


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
    identities = draw_identities(config.seed, [p for pids in splits.values() for p in pids])
    for pid, identity in identities.items():
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


def sample_grid(root: str, identities: int = 8, per_modality: int = 3, scale: int = 2) -> np.ndarray:
    """A picture of a generated set: one column pair per identity, its visible images on the left
    and its infrared ones on the right, ``per_modality`` of each from as many cameras as there are.

    The identities are the first test ones (the demo's query and gallery). Pixels are enlarged
    ``scale`` times by repetition, so what is drawn is what the model sees.

    Args:
        root: a set written by :func:`generate`.
        identities: how many identities to draw.
        per_modality: images per identity and modality.
        scale: the whole-factor enlargement.

    Returns:
        uint8 ``[height, width, 3]``.
    """
    with open(os.path.join(root, "exp", "test_id.txt")) as f:
        pids = [int(p) for p in f.read().strip().split(",")][:identities]
    columns = []
    for pid in pids:
        for cameras in (RGB_CAMERAS["all"], IR_CAMERAS):
            folders = [os.path.join(root, c, f"{pid:04d}") for c in cameras]
            paths = [[os.path.join(d, n) for n in sorted(os.listdir(d))] for d in folders if os.path.isdir(d)]
            chosen = [p for group in zip(*paths) for p in group][:per_modality]  # cameras in turn
            images = [np.asarray(Image.open(p).convert("RGB")) for p in chosen]
            columns.append(np.concatenate(images, axis=0))
    height = max(c.shape[0] for c in columns)
    gap = np.full((height, 2, 3), 255, np.uint8)
    wide_gap = np.full((height, 8, 3), 255, np.uint8)
    parts = []
    for i, column in enumerate(columns):
        column = np.pad(column, ((0, height - column.shape[0]), (0, 0), (0, 0)), constant_values=255)
        parts += [column, gap if i % 2 == 0 else wide_gap]
    grid = np.concatenate(parts[:-1], axis=1)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


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
    parser.add_argument(
        "--grid", default=None, help="also write a PNG of samples: 8 test identities, visible beside infrared"
    )
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
    if args.grid:
        os.makedirs(os.path.dirname(os.path.abspath(args.grid)), exist_ok=True)
        Image.fromarray(sample_grid(args.out)).save(args.grid)
        logger.info("wrote samples of it to %s", args.grid)


if __name__ == "__main__":
    main()
