"""The Python API: load a weights file once, detect on RGB + IR pairs.

    from yolofuse_scale import FusionDetector
    det = FusionDetector.load("runs/train/weights/best.pt")
    result = det("visible/0001.jpg", "infrared/0001.jpg")      # paths, or numpy arrays
    result.boxes, result.scores, result.classes, result.names   # xyxy in the ORIGINAL image's pixels
    result.xywhr, result.corners                                # oriented boxes (an obb model's weights)
    result.save("pair.jpg")                                     # RGB | IR side by side, boxes on both

A pair goes through the same letterbox as validation (``letterbox_pair`` on the stacked array, so the
two modalities share one geometry), one forward pass, Ultralytics' NMS (rotated for an oriented-box
model: ``engine/boxes.py``), and ``scale_boxes`` back to the RGB image's coordinates. An IR frame of
another size is resized to the RGB frame first, as in training. A 16-bit IR frame is mapped to 8 bits as
the weights were trained (their ``ir_mapping``, data.yaml's; the per-frame min-max when they record none);
an unaligned rig's ``ir_homography`` is not applied here: pass registered pairs. No distributed imports:
inference is one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolofuse_scale.data.config import IRMapping
from yolofuse_scale.data.decode import conform_channels, read_image, stack_pair
from yolofuse_scale.data.transforms import letterbox_pair, normalize_images
from yolofuse_scale.engine.evaluate import boxes_of, detect
from yolofuse_scale.errors import CheckpointError
from yolofuse_scale.model import FusionDetectionModel, model_from_config, use_one_to_one_head
from yolofuse_scale.startup import collector_paused
from yolofuse_scale.weights import read_weights

ImageLike = str | Path | np.ndarray


def load_weights_model(path: str | Path) -> tuple[FusionDetectionModel, dict[str, Any]]:
    """Rebuild the model stored in a portable weights file; return (eval-mode model on CPU, payload)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    with collector_paused():  # the build imports torch._dynamo (startup.py)
        payload = read_weights(path)
        # model_yaml is checked against allow-lists before it is built (model/safe_config.py): nothing runs
        model = model_from_config(payload["model_yaml"], payload["rgb_channels"], payload["ir_channels"],
                                  source=f"{path}: model_yaml")
    task = payload.get("task", "detect")  # a file written before tasks existed: detect
    if model.task != task:
        head = type(model.model[-1]).__name__
        raise CheckpointError(f"{path}: says task {task!r}, but its model_yaml's last layer is {head}, the head of a "
                              f"--task {model.task} model")
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:  # names or shapes that are not this architecture's
        detail = " ".join(str(e).split("\n\t")[1:4]) or str(e)
        raise CheckpointError(f"{path}: its tensors do not fit the model its model_yaml describes: {detail}") from None
    return model.eval(), payload


@dataclass(frozen=True)
class Detections:
    """Detections of one RGB+IR pair, in the original RGB image's pixel coordinates.

    Attributes:
        boxes: float32 (n, 4) x1, y1, x2, y2; for oriented boxes, the axis-aligned box enclosing each (as
            Ultralytics' ``OBB.xyxy``).
        scores: float32 (n,) confidences.
        classes: int64 (n,) class ids.
        names: class id -> name, for the whole model.
        shape: (height, width) of the original RGB image.
        xywhr: float32 (n, 5) centre x, y, width, height, angle in radians (clockwise in image axes, y down), the
            oriented boxes of a ``--task obb`` model (Ultralytics' ``OBB.xywhr``); None for axis-aligned boxes.
        rgb, ir: the pair as the detector read it (RGB order; IR (H, W, C_ir)), for :meth:`plot`. They
            are references to the arrays already read, not copies (as Ultralytics' ``Results.orig_img``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: dict[int, str]
    shape: tuple[int, int]
    rgb: np.ndarray | None = field(default=None, repr=False, compare=False)
    ir: np.ndarray | None = field(default=None, repr=False, compare=False)
    xywhr: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def oriented(self) -> bool:
        """Whether these are oriented boxes (a ``--task obb`` model's)."""
        return self.xywhr is not None

    @property
    def corners(self) -> np.ndarray:
        """float32 (n, 4, 2): each box's four corners in pixels; oriented boxes as Ultralytics' ``OBB.xyxyxyxy``
        (from the corner at +w/2, +h/2 in the box's frame), axis-aligned ones clockwise from the top left."""
        from yolofuse_scale.engine.boxes import AXIS_ALIGNED, ROTATED

        if self.oriented:
            rows = np.concatenate([self.xywhr[:, :4], np.zeros((len(self), 2), np.float32), self.xywhr[:, 4:]], 1)
            return ROTATED.corners(torch.from_numpy(rows)).numpy().astype(np.float32)
        return AXIS_ALIGNED.corners(torch.from_numpy(self.boxes.reshape(-1, 4))).numpy().astype(np.float32)

    def to_list(self) -> list[dict[str, Any]]:
        """One plain dict per detection (JSON-ready): box (xyxy), score, class, name; oriented boxes add ``xywhr``
        (angle in radians) and ``corners`` (four [x, y] points)."""
        rows = [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 5), "class": int(c),
             "name": self.names.get(int(c), str(int(c)))}
            for b, s, c in zip(self.boxes, self.scores, self.classes)
        ]
        if self.oriented:
            for row, r, pts in zip(rows, self.xywhr, self.corners):
                row["xywhr"] = [*(round(float(v), 2) for v in r[:4]), round(float(r[4]), 5)]
                row["corners"] = [[round(float(x), 2), round(float(y), 2)] for x, y in pts]
        return rows

    def txt_lines(self, save_conf: bool = False) -> list[str]:
        """One line per detection in Ultralytics' ``save_txt`` format (numbers as ``%g``, float32 arithmetic as
        there), so its tools read these files as they read theirs: ``class x_center y_center width height
        [confidence]`` normalised by the RGB image's size; for oriented boxes its OBB format, ``class x1 y1 x2 y2
        x3 y3 x4 y4 [confidence]``, the corners (:attr:`corners`) normalised by the image's width and height."""
        h, w = self.shape
        if self.oriented:
            coords = (self.corners / np.array([w, h], np.float32)).reshape(-1, 8)
        else:
            b = self.boxes.astype(np.float32).reshape(-1, 4)
            xywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
                            1)
            coords = xywh / np.array([w, h, w, h], np.float32)
        return [" ".join([f"{int(c)}", *(f"{float(v):g}" for v in row), *([f"{float(s):g}"] if save_conf else [])])
                for row, s, c in zip(coords, self.scores, self.classes)]

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path | None:
        """Write :meth:`txt_lines` to ``path`` (replacing it; missing folders are made); return the path.
        No detections: no file is written and None is returned, as Ultralytics' predictor leaves none."""
        lines = self.txt_lines(save_conf)
        if not lines:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def plot(self, show: str = "pair", labels: bool = True, conf: bool = True,
             line_width: int | None = None) -> np.ndarray:
        """The pair with its detections drawn: (H, 2W, 3) uint8 in RGB order, RGB | IR side by side.

        ``show``: ``"pair"`` (both, the same boxes on each), ``"rgb"`` or ``"ir"`` (one view, (H, W, 3));
        the IR view is resized to the RGB frame (the boxes' coordinates) and grey when it has one channel.
        ``labels``/``conf``: write class names / scores; ``line_width`` in pixels (default: by image size).
        RGB order, as the API's inputs: for ``cv2.imwrite`` convert with ``cv2.COLOR_RGB2BGR``, or call
        :meth:`save`.
        """
        from yolofuse_scale.annotate import draw_detections, side_by_side

        if show not in ("pair", "rgb", "ir"):
            raise ValueError(f"show must be 'pair', 'rgb' or 'ir', got {show!r}")
        if self.rgb is None or self.ir is None:
            raise ValueError("these Detections carry no images (rgb=, ir=): nothing to draw on")
        views = side_by_side(self.rgb, self.ir)
        corners = self.corners if self.oriented else None  # oriented boxes are drawn as their rotated outline
        drawn = [draw_detections(v, self.boxes, self.scores, self.classes, self.names, labels, conf, line_width,
                                 corners) for v, which in zip(views, ("rgb", "ir")) if show in ("pair", which)]
        return drawn[0] if len(drawn) == 1 else np.hstack(drawn)

    def save(self, path: str | Path, **plot_options: Any) -> Path:
        """Write :meth:`plot` (same options) to ``path`` (the format follows its suffix: .jpg, .png ...;
        missing folders are made); return the path. A path OpenCV cannot write is a ``ValueError`` naming it."""
        import cv2

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = cv2.cvtColor(self.plot(**plot_options), cv2.COLOR_RGB2BGR)
        try:
            ok = cv2.imwrite(str(path), image)
        except cv2.error as e:  # an unknown suffix raises rather than returns False
            raise ValueError(f"{path}: cannot be written as an image ({str(e).strip().splitlines()[-1]})") from None
        if not ok:
            raise ValueError(f"{path}: cannot be written as an image")
        return path


class FusionDetector:
    """A trained fusion detector ready for inference (see the module docstring).

    Args:
        model: an eval-mode :class:`FusionDetectionModel`.
        names: class id -> name.
        imgsz: letterbox size (default: the size the weights were trained at).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        conf, iou, max_det: NMS defaults; each call may override them.
    """

    #: how a 16-bit IR frame becomes 8 bits, as the model was trained (the weights' ``ir_mapping``; the default:
    #: each frame's min..max)
    ir_mapping: IRMapping = IRMapping()

    def __init__(
        self,
        model: FusionDetectionModel,
        names: dict[int, str],
        imgsz: int = 640,
        device: str | torch.device = "cpu",
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        ir_mapping: IRMapping | None = None,
    ):
        stride = int(model.stride.max())
        if imgsz <= 0 or imgsz % stride:
            raise ValueError(f"imgsz must be a positive multiple of the model stride {stride}, got {imgsz}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.names = dict(names)
        self.imgsz, self.conf, self.iou, self.max_det = imgsz, conf, iou, max_det
        self.ir_channels = model.ir_channels
        self.ir_mapping = ir_mapping or IRMapping()

    @classmethod
    def load(
        cls,
        weights: str | Path,
        device: str | torch.device | None = None,
        imgsz: int | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        nms_free: bool = False,
    ) -> FusionDetector:
        """Load a portable weights file (``weights_only``: no pickled code runs); GPU if available.

        ``nms_free``: an end-to-end head (YOLO26) answers from its one-to-one branch without NMS.
        """
        model, payload = load_weights_model(weights)
        if nms_free:
            use_one_to_one_head(model)
        # Conv+BN fused into one conv: ~20-30 % less inference time, numerically equal to float rounding.
        model.fuse(verbose=False)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        mapping = IRMapping.from_record(payload.get("ir_mapping"), str(weights))
        return cls(model, payload["names"], imgsz or int(payload.get("imgsz", 640)), device, conf, iou, max_det,
                   mapping)

    def _read(self, image: ImageLike, channels: int, what: str) -> np.ndarray:
        mapping = self.ir_mapping if what == "IR" else None  # RGB deeper than 8 bits: its own min..max, as in training
        if isinstance(image, (str, Path)):
            if not Path(image).is_file():
                raise FileNotFoundError(f"{image}: {what} image not found")
            return read_image(Path(image), channels, mapping=mapping)
        if isinstance(image, np.ndarray):
            try:
                return conform_channels(image, channels, bgr=False, mapping=mapping)
            except ValueError as e:
                raise ValueError(f"{what} array: {e}") from e
        raise TypeError(f"{what}: expected a path or a numpy array, got {type(image).__name__}")

    def preprocess(self, rgb: ImageLike, ir: ImageLike) -> tuple[torch.Tensor, tuple[int, int], tuple]:
        """A pair -> (float tensor (1, 3 + C_ir, imgsz, imgsz) in [0, 1], original (h, w), ratio_pad).

        Arrays: RGB is (H, W, 3) in RGB order (convert OpenCV's BGR first); IR is (H, W), (H, W, 1) or
        (H, W, 3) and is converted to the channel count the model was trained with.
        """
        return self._prepare(rgb, ir)[:3]

    def _prepare(self, rgb: ImageLike, ir: ImageLike) -> tuple[torch.Tensor, tuple[int, int], tuple, np.ndarray,
                                                                 np.ndarray]:
        """:meth:`preprocess`, plus the two arrays as read (kept by :class:`Detections` for drawing)."""
        rgb_arr = self._read(rgb, 3, "RGB")
        ir_arr = self._read(ir, self.ir_channels, "IR")
        stacked = stack_pair(rgb_arr, ir_arr)
        img, _, ratio_pad = letterbox_pair(stacked, np.zeros((0, 4), np.float32), self.imgsz)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        return normalize_images(x.to(self.device)), rgb_arr.shape[:2], ratio_pad, rgb_arr, ir_arr

    def __call__(
        self,
        rgb: ImageLike,
        ir: ImageLike,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
    ) -> Detections:
        """Detect on one pair (paths or arrays); boxes come back in the RGB image's pixel coordinates."""
        x, shape, ratio_pad, rgb_arr, ir_arr = self._prepare(rgb, ir)
        conf = self.conf if conf is None else conf
        iou = self.iou if iou is None else iou
        det = detect(self.model, x, conf, iou, max_det or self.max_det, multi_label=False)[0].cpu()
        geometry = boxes_of(self.model)
        det = geometry.to_original(det, x.shape[2:], shape, ratio_pad)  # the RGB image's pixels
        corners = geometry.corners(det)
        oriented = geometry.width == 5
        # axis-aligned: the xyxy rows themselves; oriented: the box enclosing each outline (Ultralytics' OBB.xyxy)
        boxes = torch.cat([corners.amin(1), corners.amax(1)], 1) if oriented else det[:, :4]
        return Detections(
            boxes=boxes.numpy().astype(np.float32),
            scores=det[:, 4].numpy().astype(np.float32),
            classes=det[:, 5].numpy().astype(np.int64),
            names=self.names,
            shape=(int(shape[0]), int(shape[1])),
            rgb=rgb_arr,
            ir=ir_arr,
            xywhr=geometry.boxes(det).numpy().astype(np.float32) if oriented else None,
        )
