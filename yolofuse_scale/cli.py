"""``yolofuse-scale CMD`` (also ``python -m yolofuse_scale CMD``, so ``torchrun -m yolofuse_scale ...`` works).

Commands:
  train   train a fusion detector (same flags as ``train.py``)
  val     evaluate a weights file: mAP50, mAP50-95, P, R per class as a table and one JSON line
          (oriented boxes, --task obb weights: rotated IoU, as Ultralytics' OBB validator);
          metrics.json, PR/F1/P/R curves and confusion matrices (PNG) in --out; on a KAIST
          data.yaml (`missrate:`) also KAIST's log-average miss rate (MR-2, reasonable setting)
  predict detect on RGB+IR pairs: two images, folders, videos or live streams (JSONL, annotated
          RGB|IR images or video, --save-txt labels in Ultralytics' format)
  export-onnx  weights -> one self-contained ONNX file (stacked input, or --inputs pair: rgb and ir),
          output checked against PyTorch with onnxruntime
  synth   write the synthetic LLVIP-like dataset used by the demo and the tests
  register POINTS.csv
          an unaligned rig: estimate data.yaml's ir_homography (IR -> RGB) from point pairs
  convert llvip|flir|m3fd|kaist|vedai|voc SRC DST
          turn a benchmark release (or any VOC RGB-T set) into the YOLOFuse layout + data.yaml
  checkpoint-to-weights CHECKPOINT_DIR OUT.pt
          consolidate a saved checkpoint into a portable weights file (offline)
  (the names before 0.2, ``export`` and ``export-weights``, still work)
  tune    a sweep on Ray Tune: --space FILE (settings to vary, metric, scheduler, trial resources) over the
          training flags; every trial a multi-worker Ray Train run; results.csv/md and best/config.yaml
  bench   the scaling benchmark: short real trainings per strategy and device count -> report.md,
          results.json, plots, projection to larger machines (yolofuse-scale bench --help)

Bad input (flags, config files, data, a missing file, a checkpoint that does not fit, a launch
problem) ends a command with one "error: ..." line and exit code 1 (2: a usage error), printed once
per job under a launcher; YOLOFUSE_DEBUG=1 or --debug shows the Python traceback too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from yolofuse_scale.errors import ArgumentParser, add_debug_argument, apply_debug_flag, run_entry
from yolofuse_scale.startup import collector_paused

TRAIN_EPILOG = """\
Ultralytics' key=value form works for the settings both have, mixed with --flags (docs/training.md lists them):
  yolofuse-scale train data=data.yaml model=yolo11n epochs=100 imgsz=640 batch=16 device=0,1 --fusion mid
launch it the way your cluster does; the loop is the same:
  python train.py --data data.yaml                                   # one process (CPU or one GPU)
  python train.py --data data.yaml --device 0,1                      # DDP, one process per GPU, started here
  torchrun --nproc_per_node 2 train.py --data data.yaml              # DDP
  accelerate launch --config_file configs/accelerate/ddp.yaml train.py --data data.yaml
  yolofuse-scale train --data data.yaml --engine ray --ray-workers 2 # Ray Train workers (docs/multinode.md)
outputs in --output-dir (default: runs/train, then runs/train-2, ...): config.yaml, train_log.jsonl,
checkpoints/step_<n>/, weights/{last,best}.pt, metrics.json, results.csv (a row per epoch) and plots:
results.png, labels.jpg, train_batch*.jpg, the final PR curves and matrices
bad input ends the run before the first step with one "error: ..." message (exit code 1; 2 for a usage
error), printed once per job; YOLOFUSE_DEBUG=1 or --debug adds the Python traceback
"""


def build_train_parser(prog: str = "train.py", parser_class: type[argparse.ArgumentParser] = ArgumentParser
                       ) -> argparse.ArgumentParser:
    """The training flags; ``parser_class``: how a usage error ends (the command line's: one message and exit code 2;
    the Python API's ``api.RaisingParser``: a ConfigError)."""
    from yolofuse_scale.cluster.settings import add_ray_arguments
    from yolofuse_scale.config import add_train_arguments

    parser = parser_class(
        prog=prog,
        description="Train an RGB+IR fusion YOLO detector with one Accelerate loop (single process, DDP).",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser)
    add_ray_arguments(parser)
    return parser


def train_main(argv: list[str] | None = None) -> int:
    """``python train.py ARGS``: the exit code (a user error: one message, see ``errors.py``)."""
    with collector_paused():  # the flags' modules import PyTorch (startup.py)
        parser = build_train_parser()
        args = parse_train_args(parser, sys.argv[1:] if argv is None else argv)
    apply_debug_flag(args)
    return run_entry(run_train, args)


def parse_train_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``train``'s arguments: Ultralytics' ``key=value`` rewritten into our flags (``config/ultralytics.py``), then
    argparse. A key that cannot be honoured is a usage error (exit code 2), like an unknown flag. The rewritten list
    is kept (``args.train_argv``): ``device=0,1`` starts the workers with it."""
    from yolofuse_scale.config.ultralytics import rewrite_train_args
    from yolofuse_scale.errors import ConfigError

    try:
        argv = rewrite_train_args(list(argv), parser)
    except ConfigError as e:
        parser.error(str(e))
    args = parser.parse_args(argv)
    args.train_argv = argv
    return args


class TrainResult(NamedTuple):
    """What a training ended with: the last validation's metrics, the run folder, the exit code (0: done)."""

    metrics: dict
    out: Path
    code: int


def run_train(args: argparse.Namespace, callbacks: Sequence = ()) -> int:
    """Train as ``args`` say; ``callbacks``: engine.callbacks.Callback hooks (benchmarks use them). The exit code."""
    return train(args, callbacks).code


def train(args: argparse.Namespace, callbacks: Sequence = ()) -> TrainResult:
    """Train in this process, or, for ``--device`` with several devices, start one worker process per device
    (``devices.py``) and wait for them (``callbacks`` then refused: they cannot travel to other processes)."""
    from yolofuse_scale.config import config_from_args
    from yolofuse_scale.devices import parse_devices, refuse_under_launcher, use_in_process

    devices = parse_devices(args.device) if getattr(args, "device", None) else None
    if devices is not None:
        refuse_under_launcher(devices)
    # bad data, flags or checkpoints end in run_entry's one message (printed once per job, exit 1)
    cfg = config_from_args(args)
    if getattr(args, "engine", "launcher") == "ray":  # Ray Train workers run this same loop (cluster/driver.py)
        return _train_on_ray(cfg, args, devices, callbacks)
    from yolofuse_scale.cluster.settings import ray_flags_given
    from yolofuse_scale.errors import ConfigError

    if ray_flags_given(args):
        raise ConfigError(f"{', '.join(ray_flags_given(args))} without --engine ray: they size a Ray launch; add "
                          "--engine ray, or drop them")
    if devices is not None and devices.nproc > 1:
        return _launch_workers(cfg, devices, args, callbacks)
    if devices is not None:
        use_in_process(devices)
    with collector_paused():  # imports PyTorch, Accelerate, Ultralytics (startup.py); so does the model build
        from yolofuse_scale.engine.strategy.deepspeed import release_shm_workspace  # after the checks
        from yolofuse_scale.engine.trainer import Trainer

    try:
        trainer = Trainer(cfg, callbacks)
        metrics = trainer.fit()
    finally:
        release_shm_workspace()
    return TrainResult(metrics, trainer.out, 0)


def _train_on_ray(cfg, args: argparse.Namespace, devices, callbacks: Sequence) -> TrainResult:
    """--engine ray: this process is Ray's driver; Ray places the workers (``--ray-workers``, not ``device=``)."""
    from yolofuse_scale.cluster.driver import run_on_ray
    from yolofuse_scale.cluster.settings import ray_settings
    from yolofuse_scale.errors import ConfigError

    if devices is not None:
        raise ConfigError(f"device={devices.text} with --engine ray: Ray places the workers; size them with "
                          "--ray-workers and --ray-gpus-per-worker instead", settings=("device",))
    metrics, out = run_on_ray(cfg, ray_settings(args), callbacks)
    return TrainResult(metrics, out, 0)


def _launch_workers(cfg, devices, args: argparse.Namespace, callbacks: Sequence) -> TrainResult:
    """device=0,1 / cpu:N: the run folder chosen here (numbered once for the job), then the elastic launch."""
    from yolofuse_scale.devices import drop_device_flag, launch, use_for_workers
    from yolofuse_scale.engine.run_dir import resolve_output_dir
    from yolofuse_scale.errors import ConfigError

    if callbacks:
        raise ConfigError(f"device={devices.text} starts {devices.nproc} worker processes, and callbacks run in this "
                          "one: train on one device here, or launch this script with torchrun (the callbacks then "
                          "run in every process)", settings=("device",))
    if not hasattr(args, "train_argv"):
        raise ConfigError(f"device={devices.text}: this caller gave no command line to start the workers with "
                          "(use cli.parse_train_args)", settings=("device",))
    use_for_workers(devices)  # the GPUs are there: checked before the run folder is created
    out, note = resolve_output_dir(cfg.checkpoint)
    worker_argv = drop_device_flag(args.train_argv) + ([] if cfg.checkpoint.output_dir else ["--output-dir", str(out)])
    kind = f"GPU {','.join(map(str, devices.gpus))}" if devices.kind == "cuda" else "the CPU (gloo)"
    print(f"device={devices.text}: {devices.nproc} processes on {kind}, one per device (torchrun's elastic launch); "
          f"{note or f'run folder {out}'}", flush=True)
    code = launch(devices, worker_argv)
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()).get("metrics", {}) if code == 0 and metrics_file.is_file() else {}
    return TrainResult(metrics, out, code)


def add_val_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights file written by training (weights/best.pt)")
    parser.add_argument("--data", required=True, help="data.yaml of the dataset to evaluate on")
    parser.add_argument("--split", default="val",
                        help="which split of data.yaml to evaluate (val, test, train); only its entries must exist")
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the size trained at)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch per process")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    parser.add_argument("--loader", choices=("cpu", "device"), default="cpu",
                        help="cpu: workers decode and letterbox (default); device: they ship the encoded files and "
                             "the device decodes and letterboxes (as training's --loader device validates)")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold before NMS")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    parser.add_argument("--out", default="runs/val", help="folder for metrics.json and the plots (default: runs/val)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PR curves and confusion matrix PNGs")
    parser.add_argument("--nms-free", action="store_true",
                        help="end-to-end models (yolo26): evaluate the one-to-one head's top-k, no NMS")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def run_val(args: argparse.Namespace) -> int:
    validate(args)
    return 0


def validate(args: argparse.Namespace) -> dict:
    """``val`` as ``args`` say: the metrics (also written to --out/metrics.json and printed, by the writer)."""
    from torch.utils.data import DataLoader

    from yolofuse_scale.config import RunConfig
    from yolofuse_scale.data import load_data_config, scan_split
    from yolofuse_scale.data.config import DataError, check_classes
    from yolofuse_scale.data.loaders import validation_feed
    from yolofuse_scale.data.modality import ground_truth
    from yolofuse_scale.data.sampler import ShardSampler
    from yolofuse_scale.engine.evaluate import evaluate, format_metrics_table
    from yolofuse_scale.engine.missrate import MissRate
    from yolofuse_scale.engine.storage import is_writer
    from yolofuse_scale.engine.strategy.accelerator import build_accelerator
    from yolofuse_scale.inference import load_weights_model

    acc = build_accelerator(RunConfig())
    # bad weights or data (the messages name the file) end in run_entry's one message, printed once per job
    model, payload = load_weights_model(args.weights)
    if args.nms_free:
        from yolofuse_scale.errors import ConfigError
        from yolofuse_scale.model import use_one_to_one_head

        try:
            use_one_to_one_head(model)
        except ValueError as e:  # a head without a one-to-one branch
            raise ConfigError(f"--nms-free: {args.weights}: {e}") from None
    data_cfg = load_data_config(args.data, splits=(args.split,))  # only --split must exist
    if data_cfg.ir_channels != payload["ir_channels"]:
        raise DataError(f"{data_cfg.yaml_path}: ir_channels={data_cfg.ir_channels} but {args.weights} was trained "
                        f"with {payload['ir_channels']}")
    if data_cfg.task != model.task:  # the labels must be the kind of box the model predicts
        raise DataError(f"{data_cfg.yaml_path}: its labels are '{data_cfg.task}' boxes (data.yaml 'task:', detect when "
                        f"absent) but {args.weights} predicts --task {model.task} boxes: evaluate it on a "
                        f"'task: {model.task}' dataset")
    names_differ = check_classes(data_cfg, payload["names"], args.weights)  # another class count: refused
    if acc.is_main_process:  # once per job: the run goes on
        for warning in [*data_cfg.warnings, *([names_differ] if names_differ else [])]:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    model.to(acc.device)
    imgsz = args.imgsz or int(payload.get("imgsz", 640))
    from yolofuse_scale.data.scan import trained_mapping

    # 16-bit IR: mapped as the model was trained (the weights' ir_mapping, a percentile's levels included)
    samples = scan_split(data_cfg, args.split, ir_mapping=trained_mapping(data_cfg, payload.get("ir_mapping"),
                                                                          args.weights))
    scored = ground_truth(data_cfg, args.split)  # which labels: the IR image's own, the RGB's, or their union
    if acc.is_main_process and data_cfg.labels_ir is not None:  # one label set: nothing to choose, nothing said
        print(f"val: {args.split} scored against {scored}", file=sys.stderr, flush=True)
    missrate = MissRate.from_file(data_cfg.missrate) if data_cfg.missrate else None
    if missrate is not None:  # before the model runs: an image without its KAIST annotation is named now
        missrate.class_id(payload["names"])
        missrate.check_covers([s.rgb for s in samples])
    feed = validation_feed(args.loader, samples, imgsz, data_cfg.ir_channels, acc.device)
    loader = DataLoader(feed.dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=feed.collate,
                        sampler=ShardSampler(len(feed.dataset), acc.num_processes, acc.process_index))
    out = Path(args.out)
    metrics = evaluate(model, loader, acc, payload["names"], args.conf, args.iou, args.max_det,
                       plot_dir=None if args.no_plots else out, batch_to_device=feed.to_device, missrate=missrate)
    metrics["ground_truth"] = scored
    if is_writer(acc):  # the same rule as training's files (evaluate's plots follow it too)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        print(format_metrics_table(metrics))
        print(json.dumps(metrics, sort_keys=True))
    acc.wait_for_everyone()
    return metrics


def run_export(args: argparse.Namespace) -> int:
    from yolofuse_scale.engine.checkpoint import export_weights
    from yolofuse_scale.errors import CheckpointError

    try:
        print(f"wrote {export_weights(args.checkpoint, args.out)}")
    except (FileNotFoundError, ValueError, CheckpointError) as e:  # bad checkpoint: the message names the file
        raise SystemExit(f"error: {e}") from e
    return 0


def run_bench(argv: list[str]) -> int:
    """``yolofuse-scale bench ...``: every flag goes to the benchmark's own parser (``bench/sweep.py``)."""
    from yolofuse_scale.bench.sweep import main as bench_main

    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its flags belong to the benchmark's own parser (--help included)
        return run_entry(run_bench, argv[1:])
    with collector_paused():  # the commands' modules import PyTorch (startup.py)
        args = _parse(argv)
    apply_debug_flag(args)
    return run_entry(args.func, args)


def _parse(argv: list[str]) -> argparse.Namespace:
    """Every command's parser (each module owns its flags), then ``argv`` parsed."""
    from yolofuse_scale.data import convert, synth

    parser = ArgumentParser(prog="yolofuse-scale", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a fusion detector", description=build_train_parser().description,
                           epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from yolofuse_scale.config import add_train_arguments

    add_train_arguments(train)
    from yolofuse_scale.cluster.settings import add_ray_arguments

    add_ray_arguments(train)
    train.set_defaults(func=run_train)

    val = sub.add_parser("val", help="evaluate weights on a dataset (1 or N processes, identical numbers)")
    add_val_arguments(val)
    val.set_defaults(func=run_val)

    exp = sub.add_parser("checkpoint-to-weights", aliases=["export-weights"],
                         help="turn a checkpoints/step_<n>/ folder into a portable .pt weights file")
    exp.add_argument("checkpoint", help="a checkpoint folder (checkpoints/step_<n>); its manifest is verified")
    exp.add_argument("out", help="output .pt file (full fp32 state dict + model config + names; weights_only)")
    exp.set_defaults(func=run_export)
    sub.add_parser("bench", add_help=False,
                   help="scaling benchmark: throughput, efficiency, memory, projection (yolofuse-scale bench --help)")

    from yolofuse_scale import export, predict
    from yolofuse_scale.cluster import tune
    from yolofuse_scale.data import registration

    # Commands whose module owns its flags (add_arguments) and its entry point (run).
    for name, aliases, module, help_text in [
        ("synth", [], synth, "write a synthetic LLVIP-like RGB+IR dataset with its data.yaml"),
        ("convert", [], convert, "LLVIP or VOC RGB-T release -> YOLOFuse layout + data.yaml (idempotent)"),
        ("predict", [], predict, "detect on RGB+IR images, folders, videos or streams: JSONL, drawings, labels"),
        ("register", [], registration, "unaligned rig: ir_homography (IR -> RGB) from point pairs in a CSV"),
        ("export-onnx", ["export"], export, "weights -> one ONNX file (stacked or rgb+ir inputs), checked with "
         "onnxruntime"),
        ("tune", [], tune, "a Ray Tune sweep (YAML search space, ASHA/median stopping), each trial a Ray Train run "
         "of the loop: results table, best config.yaml"),
    ]:
        cmd = sub.add_parser(name, aliases=aliases, help=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(func=module.run)

    command = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if command is not None and argv[command] == "train":  # Ultralytics' key=value form, then argparse
        args = parse_train_args(train, argv[command + 1:])
        args.debug = "--debug" in argv[:command] or getattr(args, "debug", False)
        args.func = run_train
    else:
        args = parser.parse_args(argv)
    return args


if __name__ == "__main__":
    sys.exit(main())
