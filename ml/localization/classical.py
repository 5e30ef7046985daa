"""Classical WBC localization with OpenCV: stain-aware nucleus segmentation, then a calibrated cell box.

Steps (parameters in :class:`ClassicalConfig`, defaults in ``classical.yaml``, searched by
``python -m ml.localization tune``):

1. *Nucleus channel.* WBC nuclei are the most blue-violet objects of a Romanowsky-stained smear;
   the channel (``blue_ratio``: B/(R+G+B), ``neg_b``: inverted Lab b*, ``sat``: HSV saturation,
   ``b_minus_r``) was chosen on BCCD training fields by how far it separates nuclei from the rest.
2. *Threshold.* Otsu on the whole image (computed once on a thumbnail, so tiles of a large scan
   share it), raised by ``threshold_offset`` and never below ``threshold_floor``.
3. *Morphology.* An opening removes specks; a closing of ``group_radius`` joins the lobes of one
   nucleus (neutrophils have 2-5).
4. *Splitting.* Groups much larger than one cell are split by a distance-transform watershed.
5. *Filters.* Area (nucleus pixels) and solidity bounds reject platelets, debris and stain blobs.
6. *Cytoplasm and box.* Optionally rays cast from the nucleus centre find where the cell
   meets the background (the cytoplasm edge; leaks into touching red cells are clipped); the
   nucleus and cytoplasm boxes are then mapped to the cell
   box by a linear calibration (``box_coef_w``, ``box_coef_h``, ``centre_offset``) fitted on
   annotated training fields, i.e. it learns where annotators draw the edge. With ``grabcut``, a
   third measurement joins them: OpenCV's GrabCut, seeded with the nucleus as cell and the rays'
   cytoplasm as probable cell, separates the cell from the red cells and background around it by
   their colours (at ``grabcut_scale`` of the work scale), and its box enters the calibration.

Images are processed at ``work_scale`` of their size (faster, and the morphology sizes are
given at that scale, in pixels of a 640x480 BCCD field at ``work_scale``); large images are tiled.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np

from ml.boxes import Box
from ml.colour import apply_gains, background_gains
from ml.localization.scale import detect_rescaled, parse_rescale, red_cell_rescale
from ml.localization.tiling import detect_tiled, nms

log = logging.getLogger(__name__)
CONFIG_PATH = Path(__file__).with_name("classical.yaml")
CHANNELS = ("blue_ratio", "neg_b", "sat", "b_minus_r")


def cytoplasm_calibration(n_features: int) -> tuple[list[float], list[float]]:
    """The calibration used before any is fitted: the rays' cytoplasm box grown by 30 px (its
    width and height coefficients for ``n_features`` features)."""
    w, h = [0.0] * n_features, [0.0] * n_features
    w[2], h[3], w[-1], h[-1] = 1.0, 1.0, 30.0, 30.0
    return w, h


@dataclass
class ClassicalConfig:
    channel: str = "neg_b"
    work_scale: float = 0.5
    blur: int = 5  # Gaussian kernel (odd, pixels at work scale)
    threshold_offset: float = 0.0  # added to the Otsu threshold
    threshold_floor: float = 138.0  # never below this (channel units): a field without WBC has no nucleus mode
    open_radius: int = 1
    group_radius: int = 6
    min_area: float = 250.0  # nucleus pixels at work scale
    max_area: float = 20000.0
    min_solidity: float = 0.0
    split_area: float = 6000.0  # a group larger than this is split by watershed
    split_peak: float = 0.5  # watershed markers: distance maxima above this fraction of the largest
    use_cytoplasm: bool = True
    cytoplasm_radius: int = 15  # how far (work-scale pixels) the cytoplasm may extend beyond the nucleus
    cytoplasm_contrast: float = 10.0  # cytoplasm is at least this much darker (Lab L) than the background
    cytoplasm_clip: float = 1.25  # rays longer than this times their median are clipped
    grabcut: bool = False  # the cell segmented by GrabCut as a third measurement (needs use_cytoplasm)
    grabcut_scale: float = 1.0  # GrabCut's resolution, relative to work_scale
    grabcut_iterations: int = 1
    grabcut_margin: float = 0.3  # GrabCut's window: the rays' box grown by this fraction of its size a side
    # cell box width/height = coef . (nucleus w, nucleus h, cytoplasm w, cytoplasm h, sqrt(nucleus area)
    # [, GrabCut w, GrabCut h], 1), in original-image pixels; centre = mean of the nucleus, cytoplasm
    # [and GrabCut] box centres + centre_offset
    box_coef_w: list[float] = field(default_factory=lambda: cytoplasm_calibration(6)[0])
    box_coef_h: list[float] = field(default_factory=lambda: cytoplasm_calibration(6)[1])
    centre_offset: list[float] = field(default_factory=lambda: [0.0, 0.0])
    nms_iou: float = 0.5  # of two boxes overlapping more than this, the lower-scoring one is dropped
    score_area: float = 1500.0  # nucleus area (work-scale pixels) that scores ~0.63
    score_threshold: float = 0.0
    tile: int = 2048
    overlap: int = 512
    # Make the field's background neutral grey before judging colours (another lab's lamp, camera
    # and stain base; see ml.colour). Gains come from the whole image, so tiles share them.
    white_balance: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "ClassicalConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown classical parameters: {', '.join(sorted(unknown))}")
        cfg = cls(**data)
        if cfg.channel not in CHANNELS:
            raise ValueError(f"unknown channel {cfg.channel!r}; known: {', '.join(CHANNELS)}")
        cfg.check(calibration=False)  # a calibration that does not fit is refitted by tune, or refused in use
        return cfg

    @property
    def n_features(self) -> int:
        """How many calibration features a candidate has (see ``box_coef_w``)."""
        return 8 if self.grabcut and self.use_cytoplasm else 6

    def check(self, calibration: bool = True) -> None:
        """A ``ValueError`` for GrabCut settings out of range, or (``calibration``) a box calibration
        that does not fit the measurements configured."""
        n = self.n_features
        if calibration and (len(self.box_coef_w) != n or len(self.box_coef_h) != n):
            raise ValueError(f"the box calibration has {len(self.box_coef_w)}/{len(self.box_coef_h)} coefficients "
                             f"where the measurements configured give {n} features (grabcut "
                             f"{'on' if n == 8 else 'off'}); refit it with python -m ml.localization tune")
        if not 0.1 <= self.grabcut_scale <= 1.0 or self.grabcut_iterations < 1 or not 0.05 <= self.grabcut_margin <= 2:
            raise ValueError("grabcut_scale must be in [0.1, 1], grabcut_iterations at least 1 and grabcut_margin "
                             "in [0.05, 2]")

    @classmethod
    def load(cls, path: str | os.PathLike = CONFIG_PATH) -> "ClassicalConfig":
        import yaml

        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            import json

            return cls.from_dict(json.loads(text))
        return cls.from_dict(yaml.safe_load(text) or {})

    def save(self, path: str | os.PathLike) -> None:
        import yaml

        Path(path).write_text(
            "# Classical localizer parameters (ml/localization/classical.py); rewrite with\n"
            "#   python -m ml.localization tune --data DIR --out FILE\n"
            + yaml.safe_dump(asdict(self), sort_keys=False), encoding="utf-8")


def nucleus_channel(image: np.ndarray, channel: str, lab: np.ndarray | None = None) -> np.ndarray:
    """A uint8 map where WBC nuclei are bright (``lab``: the image's Lab colours, where already made)."""
    if channel == "sat":
        return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
    if channel == "neg_b":
        return 255 - (cv2.cvtColor(image, cv2.COLOR_RGB2LAB) if lab is None else lab)[..., 2]
    f = image.astype(np.float32)
    if channel == "blue_ratio":
        return np.clip(255.0 * f[..., 2] / (f.sum(axis=-1) + 1.0), 0, 255).astype(np.uint8)
    if channel == "b_minus_r":
        return np.clip(128.0 + (f[..., 2] - f[..., 0]) / 2, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")


def _disk(r: int) -> np.ndarray:
    r = max(int(r), 0)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


@dataclass
class _Prepared:
    """An image at the working scale as the segmentation reads it (:meth:`ClassicalLocalizer._prepared`)."""

    small: np.ndarray
    lab: np.ndarray | None
    channel: np.ndarray


@dataclass
class Candidate:
    """A nucleus group at work scale: its box, the cell box grown into the cytoplasm, area and score."""

    nucleus: tuple[float, float, float, float]
    cell: tuple[float, float, float, float]
    area: float
    score: float
    segmented: tuple[float, float, float, float] | None = None  # GrabCut's cell box (``grabcut``)


class ClassicalLocalizer:
    method = "classical"
    architecture = "classical"
    version = "classical-3"  # 3: GrabCut in the box calibration
    metrics: dict = {}

    def __init__(self, config: ClassicalConfig | str | os.PathLike | None = None, *,
                 rescale: float | str = 1.0):
        """``rescale``: about 2 when cells look half as large as in BCCD fields, ``"auto"`` to judge
        the magnification from the cells found (see :mod:`ml.localization.scale`)."""
        if config is None:
            config = ClassicalConfig.load() if CONFIG_PATH.exists() else ClassicalConfig()
        elif not isinstance(config, ClassicalConfig):
            config = ClassicalConfig.load(config)
        self.config = config
        self.rescale = parse_rescale(rescale)
        self._unit = 1.0  # image pixels per trained-magnification pixel (set by ``_at``)

    def _at(self, rescale: float) -> "ClassicalLocalizer":
        """This localizer working at ``rescale`` times its working scale (same physical sizes)."""
        if rescale == 1.0:
            return self
        inner = ClassicalLocalizer(replace(self.config, work_scale=self.config.work_scale * rescale))
        inner._unit = rescale
        return inner

    # -- segmentation ------------------------------------------------------------------
    def _small(self, image: np.ndarray) -> np.ndarray:
        s = self.config.work_scale
        if s == 1.0:
            return image
        h, w = image.shape[:2]
        return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)

    def gains_for(self, image: np.ndarray) -> np.ndarray | None:
        """White-balance gains of a whole image (None when the config does not balance)."""
        return background_gains(image, max_pixels=100_000) if self.config.white_balance else None

    def _thumbnail_step(self, image: np.ndarray) -> int:
        """The stride of the thumbnail (at most ~1 Mpixel) a whole image's threshold is taken on."""
        h, w = image.shape[:2]
        return max(1, int(np.ceil(np.sqrt(h * w / 1e6))))

    def _prepared(self, image: np.ndarray, gains: np.ndarray | None, cells: bool = True) -> "_Prepared":
        """``image`` at the working scale, white-balanced by ``gains``, with its Lab colours (where the
        nucleus channel or, with ``cells``, the cell mask reads them) and its blurred nucleus channel."""
        cfg = self.config
        small = self._small(image)
        if gains is not None:  # per-channel gains commute with the (linear) downscaling
            small = apply_gains(small, gains)
        wants_lab = cfg.channel == "neg_b" or (cells and cfg.use_cytoplasm)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB) if wants_lab else None
        ch = nucleus_channel(small, cfg.channel, lab)
        if cfg.blur > 1:
            ch = cv2.GaussianBlur(ch, (cfg.blur | 1, cfg.blur | 1), 0)
        return _Prepared(small, lab, ch)

    def _threshold_of(self, channel: np.ndarray) -> float:
        otsu, _ = cv2.threshold(channel, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return max(float(otsu) + self.config.threshold_offset, self.config.threshold_floor)

    def threshold_for(self, image: np.ndarray, gains: np.ndarray | None = None) -> float:
        """The nucleus threshold of a whole image, from a thumbnail of at most ~1 Mpixel."""
        step = self._thumbnail_step(image)
        return self._threshold_of(self._prepared(np.ascontiguousarray(image[::step, ::step]), gains, cells=False).channel)

    def candidates(self, image: np.ndarray, threshold: float | None = None,
                   gains: np.ndarray | None = None, prepared: "_Prepared | None" = None) -> list[Candidate]:
        """Nucleus groups of one image (or tile) in work-scale pixels, before calibration.
        ``gains``: the whole image's white balance (computed here from ``image`` when omitted);
        ``prepared``: :meth:`_prepared` of this very image with those gains, where already made."""
        cfg = self.config
        if gains is None:
            gains = self.gains_for(image)
        if prepared is None:
            prepared = self._prepared(image, gains)
        if threshold is None:
            threshold = self.threshold_for(image, gains)
        small, ch = prepared.small, prepared.channel
        mask = (ch > threshold).astype(np.uint8)
        if cfg.open_radius > 0:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(cfg.open_radius))
        groups = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(cfg.group_radius)) if cfg.group_radius > 0 else mask
        n, labels, stats, _ = cv2.connectedComponentsWithStats(groups, connectivity=8)
        out: list[Candidate] = []
        cell_mask = self._cell_mask(prepared.lab) if cfg.use_cytoplasm else None
        cut = _GrabCut(small, cell_mask, mask, cfg) if cfg.grabcut and cell_mask is not None else None
        for i in range(1, n):
            x, y, w, h, _ = stats[i]
            comp = labels[y:y + h, x:x + w] == i
            nuc = comp & (mask[y:y + h, x:x + w] > 0)
            area = float(nuc.sum())
            if area < cfg.min_area:
                continue
            parts = [(comp, nuc)]
            if area > cfg.split_area:
                parts = self._split(comp, nuc)
            for pcomp, pnuc in parts:
                a = float(pnuc.sum())
                if a < cfg.min_area or a > cfg.max_area:
                    continue
                ys, xs = np.nonzero(pcomp)
                if cfg.min_solidity > 0:
                    pts = np.stack([xs, ys], 1).astype(np.int32)
                    hull = cv2.contourArea(cv2.convexHull(pts))
                    if hull > 0 and float(pcomp.sum()) / hull < cfg.min_solidity:
                        continue
                nb = (float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1), float(y + ys.max() + 1))
                cb = self._grow(cell_mask, nb) if cell_mask is not None else nb
                score = float(1.0 - np.exp(-a / max(cfg.score_area, 1.0)))
                out.append(Candidate(nb, cb, a, score, cut.box(nb, cb) if cut is not None else None))
        return out

    def _split(self, comp: np.ndarray, nuc: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Split a group at the valleys of its distance transform (marker-based watershed).

        Markers are the distance-transform maxima higher than ``split_peak`` times the largest
        one and at least that far apart, so two touching nuclei give two markers while the lobes
        of one neutrophil (thin, low maxima) do not."""
        dist = cv2.distanceTransform(comp.astype(np.uint8), cv2.DIST_L2, 5)
        top = float(dist.max())
        if top <= 0:
            return [(comp, nuc)]
        size = max(3, int(top) | 1)
        peaks = ((dist >= self.config.split_peak * top) & (dist >= cv2.dilate(dist, _disk(size // 2)))).astype(np.uint8)
        n, markers = cv2.connectedComponents(cv2.dilate(peaks, _disk(2)))
        if n <= 2:
            return [(comp, nuc)]
        markers = markers.astype(np.int32) + 1
        markers[comp == 0] = 1  # background marker
        markers[(comp > 0) & (markers == 1)] = 0  # unknown: to be flooded
        grey = (255 - np.clip(dist * 255 / top, 0, 255)).astype(np.uint8)
        cv2.watershed(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), markers)
        return [(markers == k, (markers == k) & nuc) for k in range(2, n + 1)]

    def _cell_mask(self, lab: np.ndarray) -> np.ndarray:
        """Pixels darker than the background (Lab L of the working-scale image, background level from
        Otsu): cells, including the pale WBC cytoplasm. Touching red cells are handled by the ray
        clipping in ``_grow``."""
        light = cv2.GaussianBlur(np.ascontiguousarray(lab[..., 0]), (5, 5), 0)
        t_light, _ = cv2.threshold(light, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        bg_light = float(np.median(light[light > t_light])) if (light > t_light).any() else 255.0
        return (light < bg_light - self.config.cytoplasm_contrast).astype(np.uint8)

    def _grow(self, cell_mask: np.ndarray, nb: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Cast rays from the nucleus centre to where the cytoplasm ends; outliers (leaks into
        touching cells) are clipped to 1.25 times the median ray. Returns the rays' bounding box."""
        h, w = cell_mask.shape
        cx, cy = (nb[0] + nb[2]) / 2, (nb[1] + nb[3]) / 2
        rx, ry = (nb[2] - nb[0]) / 2, (nb[3] - nb[1]) / 2
        reach = max(rx, ry) + self.config.cytoplasm_radius
        t = np.arange(0, reach, 1.0, dtype=np.float32)
        ang = np.linspace(0, 2 * np.pi, 32, endpoint=False, dtype=np.float32)
        dx, dy = np.cos(ang)[:, None], np.sin(ang)[:, None]
        xs = np.clip(np.round(cx + dx * t[None]), 0, w - 1).astype(np.int32)
        ys = np.clip(np.round(cy + dy * t[None]), 0, h - 1).astype(np.int32)
        # inside the nucleus box ellipse everything counts as cell
        inside_nuc = (dx * t[None] / max(rx, 1)) ** 2 + (dy * t[None] / max(ry, 1)) ** 2 <= 1.0
        on = (cell_mask[ys, xs] > 0) | inside_nuc
        off = ~on
        first_off = np.where(off.any(axis=1), off.argmax(axis=1), len(t)).astype(np.float32)
        r = np.minimum(first_off, self.config.cytoplasm_clip * np.median(first_off))
        px, py = cx + dx[:, 0] * r, cy + dy[:, 0] * r
        return (float(px.min()), float(py.min()), float(px.max()), float(py.max()))

    # -- boxes -------------------------------------------------------------------------
    def box_features(self, cand: Candidate) -> tuple[np.ndarray, float, float]:
        """Calibration features in pixels at the trained magnification (the original image's
        pixels unless rescaled), and the uncalibrated centre."""
        s = self.config.work_scale / self._unit
        n = [v / s for v in cand.nucleus]
        c = [v / s for v in cand.cell]
        f = [n[2] - n[0], n[3] - n[1], c[2] - c[0], c[3] - c[1], np.sqrt(cand.area) / s]
        boxes = [n, c]
        if self.config.n_features == 8:
            g = [v / s for v in (cand.segmented or cand.cell)]
            f += [g[2] - g[0], g[3] - g[1]]
            boxes.append(g)
        cx = sum(b[0] + b[2] for b in boxes) / (2 * len(boxes))
        cy = sum(b[1] + b[3] for b in boxes) / (2 * len(boxes))
        return np.array(f + [1.0]), cx, cy

    def calibrate(self, cand: Candidate) -> Box:
        """Map a candidate (work-scale pixels) to a cell box in original pixels."""
        cfg = self.config
        f, cx, cy = self.box_features(cand)
        cx, cy = cx + cfg.centre_offset[0], cy + cfg.centre_offset[1]
        w = max(1.0, float(np.dot(cfg.box_coef_w, f)))
        h = max(1.0, float(np.dot(cfg.box_coef_h, f)))
        u = self._unit
        return Box((cx - w / 2) / u, (cy - h / 2) / u, (cx + w / 2) / u, (cy + h / 2) / u, "WBC", cand.score)

    def boxes_from(self, cands: list[Candidate], width: int, height: int) -> list[Box]:
        """Calibrated, clipped boxes of candidates, overlapping ones suppressed."""
        self.config.check()
        boxes = [b for b in (self.calibrate(c).clip(width, height) for c in cands) if b.area > 0]
        return nms(boxes, self.config.nms_iou) if self.config.nms_iou < 1.0 else boxes

    def detect(self, image: np.ndarray, *, progress: Callable[[float], None] | None = None,
               min_score: float | None = None, labels: tuple[str, ...] | None = ("WBC",),
               rescale: float | str | None = None) -> list[Box]:
        """WBC boxes in original pixels (large images tiled, sharing one threshold and white
        balance). The classical method finds white cells only; ``labels`` is accepted for symmetry
        with the deep detector. ``rescale`` overrides the localizer's own (see ``__init__``)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
        if labels is not None and "WBC" not in labels:
            return []
        gains = self.gains_for(image)
        min_score = self.config.score_threshold if min_score is None else min_score

        def at(r: float) -> list[Box]:
            loc = self._at(r)
            # a field small enough for its thumbnail to be itself is prepared once, for both
            whole = loc._prepared(image, gains) if loc._thumbnail_step(image) == 1 else None
            thr = loc._threshold_of(whole.channel) if whole is not None else loc.threshold_for(image, gains)

            def one(tile: np.ndarray) -> list[Box]:
                th, tw = tile.shape[:2]
                same = whole if whole is not None and tile.shape == image.shape else None
                found = loc.boxes_from(loc.candidates(tile, thr, gains, prepared=same), tw, th)
                return [b for b in found if b.score >= min_score]

            return detect_tiled(image, one, tile=self.config.tile, overlap=self.config.overlap, progress=progress)

        rescale = self.rescale if rescale is None else parse_rescale(rescale)
        return detect_rescaled(at, image.shape, rescale, counts=lambda b: b.score >= self.config.score_threshold,
                               red_cells=lambda side: red_cell_rescale(image, max_side=side))


class _GrabCut:
    """GrabCut of each candidate's cell within one image (or tile), at ``grabcut_scale`` of the work
    scale. The window is the rays' cytoplasm box grown by ``grabcut_margin`` of its size on each
    side; its nucleus pixels are cell, its cytoplasm-mask pixels inside the rays' box probably cell,
    the rest probably not, its border not. The box of the segmented part that holds most of the nucleus is returned
    (in work-scale pixels); where GrabCut cannot run, the rays' box."""

    def __init__(self, small: np.ndarray, cell_mask: np.ndarray, nucleus_mask: np.ndarray, cfg: ClassicalConfig):
        self.scale, self.iterations, self.margin = cfg.grabcut_scale, cfg.grabcut_iterations, cfg.grabcut_margin
        h, w = small.shape[:2]
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        if size != (w, h):
            small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
            cell_mask = cv2.resize(cell_mask, size, interpolation=cv2.INTER_NEAREST)
            nucleus_mask = cv2.resize(nucleus_mask, size, interpolation=cv2.INTER_NEAREST)
        self.bgr = np.ascontiguousarray(small[..., ::-1])
        self.cell, self.nucleus = cell_mask > 0, nucleus_mask > 0

    def box(self, nb, cb) -> tuple[float, float, float, float]:
        k = self.scale
        H, W = self.cell.shape
        cw, ch = cb[2] - cb[0], cb[3] - cb[1]
        pad = self.margin
        X0, Y0 = max(0, int((cb[0] - pad * cw) * k)), max(0, int((cb[1] - pad * ch) * k))
        X1, Y1 = min(W, int((cb[2] + pad * cw) * k) + 1), min(H, int((cb[3] + pad * ch) * k) + 1)
        if X1 - X0 < 4 or Y1 - Y0 < 4:
            return cb

        def inside(b):  # a box's pixels in the window
            m = np.zeros((Y1 - Y0, X1 - X0), bool)
            m[max(0, int(b[1] * k) - Y0):max(0, int(b[3] * k) - Y0),
              max(0, int(b[0] * k) - X0):max(0, int(b[2] * k) - X0)] = True
            return m

        seed = self.nucleus[Y0:Y1, X0:X1] & inside(nb)
        if not seed.any():
            return cb
        m = np.full(seed.shape, cv2.GC_PR_BGD, np.uint8)
        m[self.cell[Y0:Y1, X0:X1] & inside(cb)] = cv2.GC_PR_FGD
        m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = cv2.GC_BGD
        m[seed] = cv2.GC_FGD
        try:
            cv2.setRNGSeed(0)  # GrabCut's colour models start from k-means: the same answer every time
            cv2.grabCut(self.bgr[Y0:Y1, X0:X1], m, None, np.zeros((1, 65)), np.zeros((1, 65)), self.iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # e.g. a window of one colour
            return cb
        fg = ((m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD)).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        if n < 2:
            return cb
        best = max(range(1, n), key=lambda i: int((seed & (labels == i)).sum()))
        x, y, bw, bh, _ = stats[best]
        return ((X0 + x) / k, (Y0 + y) / k, (X0 + x + bw) / k, (Y0 + y + bh) / k)
