"""``--loader device``, the device: a batch of plans and files becomes the batch ``--loader cpu`` would give.

Per batch the training process (:class:`DeviceAugment`) decodes every file once (``decode_jpeg`` on the device
for JPEG; ``decode_image`` on the CPU, then a copy, for PNG; pairs the worker decoded or read from the cache are
copied as they are), turns it upright by its EXIF orientation (a transpose and flips on the device: torchvision
0.29's ``apply_exif_orientation`` is ignored by its CUDA decoder), then renders the plans (``plan.py``: each node
renders itself) with every warp of the batch in one ``grid_sample`` per canvas side (mosaics: 2 x imgsz; single
pairs, pasted top-left on a grey imgsz square: imgsz; so one or two calls whatever the batch size, and a sample's
pixels do not depend on its batch), from each sample's inverse 3x3 matrix (so perspective works too); then the
draws on the finished canvases (HSV on RGB, the IR gain, the flip, the IR misregistration warp) on the whole batch
at once. No RNG here: the plans hold
every draw. It costs device time and memory: the warp inputs of the batch are alive together, in canvases kept
from one batch to the next (a 6-channel 1280x1280 float mosaic is 39 MB, so a batch of 16 at 640 px holds ~0.6 GB
of them, twice that with mixup on every sample, plus the grids), and it runs in the step (logged as data time).

Validation (:class:`DeviceLetterbox`) decodes, resizes (long side imgsz) and pads (``PAD_VALUE``) on the device,
leaving the targets on the host where ``evaluate`` reads them.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from yolofuse_scale.data.config import DataError
from yolofuse_scale.data.device.plan import RECORDING, Letterbox, Node, Plan, Warp, resize
from yolofuse_scale.data.imagefile import STEPS
from yolofuse_scale.data.transforms import PAD_VALUE


def conform(t: torch.Tensor, channels: int) -> torch.Tensor:
    """A decoded (C, H, W) uint8 image (RGB order; gray(+alpha), RGB(A)) as ``channels`` channels, as
    ``decode.conform_channels``: alpha dropped, cv2's gray weights. (16-bit files never get here: the worker
    decodes them with the CPU loader's code, see ``worker.encoded_file``.)"""
    if t.shape[0] in (2, 4):
        t = t[: t.shape[0] - 1]
    if channels == 1 and t.shape[0] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=t.device).view(3, 1, 1)
        return (t.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if channels == 3 and t.shape[0] == 1:
        return t.expand(3, -1, -1)
    return t


def orient(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """A decoded (C, H, W) image turned upright by its EXIF orientation (``imagefile.orient``'s steps)."""
    if orientation not in STEPS:
        return t
    transpose, rows, cols = STEPS[orientation]
    t = t.transpose(1, 2) if transpose else t
    dims = [d for d, flip in ((1, rows), (2, cols)) if flip]
    return t.flip(dims) if dims else t.contiguous()


class _Frames:
    """One batch's rendering state, what plan nodes render from (``plan.Frames``): the decoded pairs, their
    resizes (once per batch) and the warps done, by node."""

    def __init__(self, renderer: DeviceAugment, pairs: dict[int, torch.Tensor]):
        self.renderer, self.pairs = renderer, pairs
        self._resized: dict[tuple, torch.Tensor] = {}
        self._warped: dict[int, torch.Tensor] = {}

    def pair(self, index: int) -> torch.Tensor:
        return self.pairs[index]

    def resized(self, index: int, hw: tuple[int, int]) -> torch.Tensor:
        key = (index, hw)
        if key not in self._resized:
            self._resized[key] = resize(self.pairs[index], hw)
        return self._resized[key]

    def warped(self, node: Warp) -> torch.Tensor:
        if id(node) not in self._warped:  # a warp nobody announced (nested in another's input): alone
            self.warp_all([node])
        return self._warped[id(node)]

    def warp_all(self, nodes: list[Warp]) -> None:
        """Warp these nodes: one ``grid_sample`` per (canvas side, output size, perspective or not), so the kernel
        launches of a batch do not grow with its size (a batch holds at most two canvas sides, mosaic and not;
        perspective is the recipe's, the same for all). Each input is written minus 114 at the top left of a
        zeroed canvas: beyond it reads 0, what the zeros padding reads outside the canvas, so sampling there is
        sampling outside the image (grey). A mosaic's tiles go straight into its canvas (no copy)."""
        r = self.renderer
        groups: dict[tuple, list[Warp]] = {}
        for n in nodes:  # grouped by the plan's shapes, so each input is written as soon as it is rendered
            groups.setdefault((r.canvas_side(*n.src.out_hw()), n.size, n.perspective), []).append(n)
        for (side, size, _), group in groups.items():
            x = r.canvases(len(group), side)
            for j, n in enumerate(group):
                n.src.paste_shifted(self, x[j])
            warped = r.warp_canvases(x, group, size)
            self._warped.update((id(n), warped[j]) for j, n in enumerate(group))


class DeviceAugment:
    """Turn a ``worker.collate_encoded`` batch into ``collate_pairs``' batch on ``device``: ``img`` uint8
    ``(B, 3 + ir_channels, imgsz, imgsz)``, targets moved. Deterministic given the plans (no RNG here)."""

    def __init__(self, imgsz: int, ir_channels: int, device: torch.device | str):
        self.imgsz, self.ir_channels, self.device = imgsz, ir_channels, torch.device(device)
        self._grids: dict[tuple[int, int], torch.Tensor] = {}
        self._buffers: dict[int, torch.Tensor] = {}  # the warp canvases of the largest batch so far, per side

    def __call__(self, batch: dict) -> dict:
        pairs = self.decode(batch["files"])
        imgs = self.render_batch([p.root for p in batch["plans"]], pairs)
        img = self.photometric(imgs, batch["plans"]).to(torch.uint8)
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
               for k, v in batch.items() if k not in ("plans", "files")}
        out["img"] = img
        return out

    # decode: every file of the batch once; JPEGs in one batched call (nvJPEG on CUDA)
    def decode(self, files: dict[int, tuple]) -> dict[int, torch.Tensor]:
        """{pair index: (3 + C_ir, H, W) float pair at its file size on the device} from ``collate_encoded``'s files."""
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (for TorchCodec), on each call
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
            return self._decode(files)

    def upload(self, t: torch.Tensor) -> torch.Tensor:
        """The one host -> device copy of the pixels: of uint8 images (decoded on the host, or cached) only;
        JPEG bytes go to ``decode_jpeg`` on the device instead."""
        return t.to(self.device, non_blocking=True)

    def _decode(self, files: dict[int, tuple]) -> dict[int, torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        pairs = {i: self.upload(f[1]).permute(2, 0, 1).float() for i, f in files.items() if f[0] == "frame"}
        files = {i: f for i, f in files.items() if f[0] != "frame"}  # the rest: encoded files, decoded here
        order = [(i, m) for i in files for m in (0, 1)]
        decoded: dict[tuple[int, int], torch.Tensor] = {}
        jpegs = [(i, m) for i, m in order if files[i][m][0] == "jpeg"]
        if jpegs:
            dev = self.device if self.device.type == "cuda" else "cpu"
            try:
                outs = decode_jpeg([files[i][m][1] for i, m in jpegs], mode=ImageReadMode.UNCHANGED, device=dev)
            except RuntimeError:  # one bad file fails the whole batched call: find it
                outs = [self._decode_one(decode_jpeg, files[i][m], dev) for i, m in jpegs]
            decoded.update(zip(jpegs, outs))
        for i, m in order:
            kind, data = files[i][m][:2]
            if kind == "encoded":
                decoded[i, m] = self._decode_one(decode_image, files[i][m], "cpu")
            elif kind == "raw":
                decoded[i, m] = data.permute(2, 0, 1)
        for i in files:
            rgb = conform(orient(self.upload(decoded[i, 0]), files[i][0][3]), 3)
            ir = conform(orient(self.upload(decoded[i, 1]), files[i][1][3]), self.ir_channels)
            if ir.shape[1:] != rgb.shape[1:]:  # the scan reports this; stack_pair's rule otherwise
                ir = resize(ir.float(), tuple(rgb.shape[1:]))
            pairs[i] = torch.cat([rgb.float(), ir.float()])
        return pairs

    @staticmethod
    def _decode_one(fn, file: tuple[str, torch.Tensor, str, int], dev) -> torch.Tensor:
        from torchvision.io import ImageReadMode

        try:
            kw = {"device": dev} if fn.__name__ == "decode_jpeg" else {}
            return fn(file[1], mode=ImageReadMode.UNCHANGED, **kw)
        except RuntimeError as e:
            raise DataError(f"{file[2]}: cannot be decoded as an image ({str(e).splitlines()[0]})") from e

    # render: the plans' image trees, every warp of the batch announced first so that they run batched
    def render_batch(self, roots: list[Node], pairs: dict[int, torch.Tensor]) -> torch.Tensor:
        """(B, C, imgsz, imgsz) float: the trees of a batch, every warp of the batch in one ``grid_sample`` per
        canvas size, then the mixup blends."""
        frames = _Frames(self, pairs)
        frames.warp_all([w for r in roots for w in r.warps()])
        return torch.stack([r.render(frames) for r in roots])

    def render(self, node: Node, pairs: dict[int, torch.Tensor]) -> torch.Tensor:
        """One tree alone, as it renders in any batch."""
        return node.render(_Frames(self, pairs))

    def canvas_side(self, h: int, w: int) -> int:
        """The square a warp input is padded into: the smallest multiple of imgsz that holds it (a mosaic:
        2 x imgsz, as it is; a single pair, long side imgsz: imgsz). It depends on the input alone, so a
        sample's pixels do not depend on what else is in its batch (world size, batch size)."""
        return self.imgsz * max(1, -(-max(h, w) // self.imgsz))

    def canvases(self, n: int, side: int) -> torch.Tensor:
        """(n, C, side, side) zeros in a buffer kept between batches (grid_sample's output is a new tensor, so
        nothing refers to it after the call): a fresh 80-160 MB allocation a batch costs the CPU path its page
        faults (more than the per-sample version's smaller canvases), and is cheap on CUDA either way."""
        shape = (n, 3 + self.ir_channels, side, side)
        buf = self._buffers.get(side)
        if buf is None or buf.numel() < np.prod(shape):
            buf = self._buffers[side] = torch.empty(int(np.prod(shape)), device=self.device)
        return buf[: int(np.prod(shape))].view(shape).zero_()

    def _grid(self, w: int, h: int) -> torch.Tensor:
        """Homogeneous output pixel centres (3, h*w), cached per size (one allocation per run)."""
        if (w, h) not in self._grids:
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=self.device),
                                    torch.arange(w, dtype=torch.float32, device=self.device), indexing="ij")
            self._grids[w, h] = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=self.device)])
        return self._grids[w, h]

    def _sampling_grid(self, nodes: list[Warp], size: tuple[int, int], side: int) -> torch.Tensor:
        """(B, h, w, 2) ``grid_sample`` coordinates on ``side``-square canvases: output pixel (x, y) samples
        ``inv(matrix) @ (x, y, 1)`` (divided by its w under perspective), with half-pixel centres
        (align_corners=False: pixel i spans [i, i+1), normalised by 2 / side).

        Elementwise ops on the batch, not a batched matmul: bmm's blocking depends on the batch size (rows
        differ in the last bit), and a sample must not depend on its batch. Affine: the normalisation is
        folded into the matrix (float64, once per sample), so the grid is 2 multiply-adds a pixel."""
        w, h = size
        px, py, _ = (t.view(1, -1, 1) for t in self._grid(w, h))  # (1, h*w, 1)
        inv = np.stack([np.linalg.inv(n.matrix) for n in nodes])
        k = 2.0 / side
        if not nodes[0].perspective:  # the group shares it (warp_all's key)
            a = inv[:, :2] * k
            a[:, :, 2] += k / 2 - 1
            a = torch.from_numpy(a).to(torch.float32).to(self.device).transpose(1, 2).unsqueeze(2)  # (B, 3, 1, 2)
            grid = px * a[:, 0] + py * a[:, 1] + a[:, 2]
        else:
            t = torch.from_numpy(inv).to(torch.float32).to(self.device).transpose(1, 2).unsqueeze(2)  # (B, 3, 1, 3)
            src = px * t[:, 0] + py * t[:, 1] + t[:, 2]  # (B, h*w, 3) source pixel coordinates, homogeneous
            grid = (src[..., :2] / src[..., 2:] + 0.5) * k - 1
        return grid.view(len(nodes), h, w, 2)

    def warp_canvases(self, x: torch.Tensor, nodes: list[Warp], size: tuple[int, int]) -> torch.Tensor:
        """cv2.warpAffine/warpPerspective(INTER_LINEAR, border 114) of (B, C, S, S) canvases holding images
        minus 114 (see ``_Frames.warp_all``), each by its node's matrix, in one ``grid_sample``."""
        grid = self._sampling_grid(nodes, size, x.shape[-1])
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.add_(PAD_VALUE).round_().clamp_(0, 255)

    # photometric: the whole batch at once, each recorded draw applied by its recording class, in the CPU order
    def photometric(self, imgs: torch.Tensor, plans: list[Plan]) -> torch.Tensor:
        for op in RECORDING.photometric:
            imgs = op.apply(imgs, [p.photometric.get(op.key) for p in plans])
        return imgs


class DeviceLetterbox(DeviceAugment):
    """Validation's ``batch_to_device`` under ``--loader device``: a ``collate_encoded`` batch of letterbox plans
    -> ``collate_pairs``' batch, ``img`` uint8 ``(B, 3 + ir_channels, imgsz, imgsz)`` on the device, every other
    key as the CPU val batch has it, on the host (``evaluate`` indexes the targets there, as it always has)."""

    def __call__(self, batch: dict) -> dict:
        roots = [p.root for p in batch["plans"]]
        if not all(isinstance(r, Letterbox) for r in roots):  # an augmented set handed to validation
            raise ValueError("DeviceLetterbox renders letterbox plans only (a set built with augment=False)")
        img = self.render_batch(roots, self.decode(batch["files"])).to(torch.uint8)
        return {**{k: v for k, v in batch.items() if k not in ("plans", "files")}, "img": img}
