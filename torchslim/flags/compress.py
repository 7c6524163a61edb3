"""The flags of ``torchslim prune`` and ``torchslim compress-weights``, and prune's flag combinations.

The command line and the recipe schema (:mod:`torchslim.pipeline.schema`) both read them from here.
"""

from __future__ import annotations

from ..checks import POSITIVE_INT, SEED, THREADS, float_range
from ..errors import UserError
from .common import add_data_args, add_json_arg, add_kd_args

# the compress-weights methods (each one implemented by the verb's COMPRESSORS entry)
WEIGHT_METHODS = ("kmeans", "magnitude", "pq", "qcnn", "svd", "tucker")


def _round_to(text):
    """``--round-to``: ``auto`` or a positive integer (recipes read ``kind`` and reuse the check)."""
    return "auto" if str(text) == "auto" else POSITIVE_INT(text)


_round_to.kind, _round_to.__name__ = "str", "round-to"


def add_prune_flags(parser) -> None:
    """The flags of ``torchslim prune``."""
    parser.add_argument("file", help="a model saved by torchslim")
    parser.add_argument("--criterion", default="l1",
                        help="l1, l2, mean-act, apoz, taylor, taylor-weight, taylor-group, bn-scale, oicsr, random, oracle")
    parser.add_argument("--target-macs", type=float, metavar="F", help="share of MACs to keep, e.g. 0.33")
    parser.add_argument("--target-params", type=float, metavar="F",
                        help="share of parameters to keep (with --target-macs: both are met)")
    parser.add_argument("--target-latency", type=float, metavar="F",
                        help="share of the batch-1 latency to keep on --latency-runtime, measured on this machine "
                             "(per-layer tables, then the cut model is timed and the aim corrected)")
    parser.add_argument("--latency-runtime", choices=["torch", "ort", "openvino"], default="torch",
                        help="the runtime the model will run on: eager torch, ONNX Runtime or OpenVINO fp32; "
                             "--target-latency is measured there and --round-to auto follows it "
                             "(openvino timing needs the torchslim[openvino] extra)")
    parser.add_argument("--ratio", type=float, metavar="F", help="share of channels to remove, in [0, 1)")
    parser.add_argument("--scope", default="global", help="layer (uniform), global (normalised ranking) or "
                        "greedy (cost-aware global); default global")
    parser.add_argument("--step-channels", type=int, default=0, metavar="N",
                        help="iterative: remove N channels per round, fine-tune, repeat until the target")
    parser.add_argument("--rounds", type=int, default=0, metavar="K",
                        help="iterative: reach the target in K geometric rounds (round k keeps target^(k/K)), "
                        "fine-tuning --finetune-epochs after each")
    parser.add_argument("--finetune-epochs", type=int, default=0, metavar="E", help="fine-tune epochs (per round)")
    parser.add_argument("--regularize", choices=["oicsr", "slim"], default=None,
                        help="train with a sparsity regulariser before pruning")
    parser.add_argument("--lambda", dest="lam", type=float, default=1e-4, metavar="L", help="regulariser weight")
    parser.add_argument("--regularize-epochs", type=int, default=1, metavar="E")
    parser.add_argument("--min-channels", type=POSITIVE_INT, default=1)
    parser.add_argument("--round-to", type=_round_to, default="auto", metavar="N|auto",
                        help="keep a multiple of N channels per group; auto (default): the channel block that "
                             "--latency-runtime computes in on this CPU (16 with AVX-512, 8 with AVX2; "
                             "docs/guides/your-model.md)")
    parser.add_argument("--ignore", action="append", default=[], metavar="LAYER",
                        help="module name or glob pattern to leave alone (repeatable)")
    parser.add_argument("--calibration-batches", type=POSITIVE_INT, default=8)
    parser.add_argument("--no-bn-recalibration", action="store_true",
                        help="keep the BatchNorm statistics of the unpruned model (default: re-estimate them "
                        "on the calibration batches after pruning)")
    parser.add_argument("--producers-only", action="store_true",
                        help="l1/l2 score only the producing filters, not the whole coupled group")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs of the saved model")
    parser.add_argument("--teacher", choices=["original"], default=None,
                        help="fine-tune with distillation from the unpruned model")
    add_kd_args(parser)
    parser.add_argument("--lr", type=float_range(0, low_open=True), default=0.01)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    parser.add_argument("--threads", type=THREADS, default=None, help="torch threads for the latency measurement")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="where to save the pruned model")
    add_data_args(parser, required=False)
    add_json_arg(parser)
    parser.set_defaults(check_args=check_args)


def check_args(args) -> None:
    """Flag combinations argparse cannot express; needs no file or data (recipes call it when planning)."""
    targets = (args.target_macs, args.target_params, getattr(args, "target_latency", None))
    if args.ratio is None and all(t is None for t in targets):
        raise UserError("give --target-macs, --target-params, --target-latency (any of them) or --ratio")
    if args.ratio is not None and any(t is not None for t in targets):
        raise UserError("--ratio cannot be combined with --target-macs, --target-params or --target-latency")
    if getattr(args, "target_latency", None) is not None and (args.step_channels or args.rounds):
        raise UserError("--target-latency is one-shot: it cannot be combined with --step-channels or --rounds")
    if min(args.finetune_epochs, args.step_channels, args.rounds, args.regularize_epochs) < 0:
        raise UserError("--finetune-epochs, --step-channels, --rounds and --regularize-epochs must be >= 0")
    if args.step_channels and args.rounds:
        raise UserError("give --step-channels or --rounds, not both")
    if (args.step_channels or args.rounds) and args.ratio is not None:
        flag = "--step-channels" if args.step_channels else "--rounds"
        raise UserError(f"{flag} needs --target-macs or --target-params (the rounds stop at the target)")
    if args.regularize and not args.lam > 0:
        raise UserError(f"--lambda must be > 0, got {args.lam}")
    if args.teacher is None and (args.temperature is not None or args.alpha is not None):
        raise UserError("--temperature and --alpha need --teacher original")
    if args.teacher is not None and (args.temperature is not None or args.alpha is not None):
        from ..distill import check_kd_args, get_loss  # lazy: loads when the verb runs

        hinton = get_loss("hinton")
        check_kd_args(hinton.default_temperature if args.temperature is None else args.temperature,
                      hinton.default_alpha if args.alpha is None else args.alpha)


def add_compress_weights_flags(parser) -> None:
    """The flags of ``torchslim compress-weights``."""
    parser.add_argument("file", help="a model saved by torchslim")
    parser.add_argument("--method", required=True, choices=WEIGHT_METHODS)
    # Method-specific flags default to None, so one given to a method that ignores it can be refused
    # (METHOD_FLAGS); DEFAULTS fills in the values that apply when they are not given.
    parser.add_argument("--sparsity", type=float, default=None,
                        help="magnitude: fraction of weights removed (default 0.9)")
    parser.add_argument("--scope", default=None, help="magnitude: layer (default) or global threshold")
    parser.add_argument("--schedule", default=None, help="magnitude: oneshot (default), agp or iterative")
    parser.add_argument("--agp-fraction", type=float, default=None,
                        help="magnitude, agp: share of the fine-tune spent ramping up to the final sparsity "
                             "(default 0.75); the rest trains at the final masks")
    parser.add_argument("--criterion", default=None, choices=("magnitude", "folded"),
                        help="magnitude: rank weights by |w| (default) or by |w| with the following BatchNorm "
                             "folded in (the weights the deployed layer computes with)")
    parser.add_argument("--layer-sparsity", default=None,
                        help="magnitude: per-layer fractions removed, NAME=S,NAME=S (other layers: --sparsity)")
    parser.add_argument("--bits", type=int, default=None,
                        help="kmeans: bits per weight of Linear layers (default 5); pq/qcnn: bits per code "
                             "(2**B codewords per subspace, default 6)")
    parser.add_argument("--conv-bits", type=int, default=None, help="kmeans: bits per conv weight (default 8)")
    parser.add_argument("--layer-bits", default=None,
                        help="kmeans: per-layer bits, NAME=B,NAME=B (other layers: --bits / --conv-bits)")
    parser.add_argument("--side-dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="kmeans: round centroids and biases to this type after the fine-tune (default "
                             "float32; the packed file then stores them in it)")
    parser.add_argument("--init", default=None,
                        help="kmeans: centroid initialisation (linear (default), density, random)")
    parser.add_argument("--subvector", type=int, default=None,
                        help="pq/qcnn: input channels per sub-vector (default 4)")
    parser.add_argument("--calib-samples", type=int, default=None, help="qcnn: calibration images (default 256)")
    ranks = parser.add_mutually_exclusive_group()
    ranks.add_argument("--rank-energy", type=float, default=None, help="svd/tucker: energy kept per layer (0..1]")
    ranks.add_argument("--target-macs", type=float, default=None, help="svd/tucker: fraction of the MACs to keep")
    parser.add_argument("--exclude", default="", help="comma-separated layer paths left as they are")
    parser.add_argument("--fold-bn", action="store_true",
                        help="fold each BatchNorm into the layer before it first (the deployed form: no BN "
                             "parameters left to store, and weight sharing sees the weights that will be stored)")
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="fine-tune learning rate (default per method)")
    parser.add_argument("--weight-decay", type=float, default=None, help="fine-tune weight decay (default per method)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    parser.add_argument("--distill", action="store_true", help="fine-tune with the input model as teacher")
    parser.add_argument("--teacher", default=None, metavar="FILE",
                        help="fine-tune with this saved model as teacher instead of the input model (implies "
                             "--distill; e.g. the float model when the input is already pruned)")
    add_kd_args(parser)
    parser.add_argument("--no-augment", action="store_true", help="fine-tune without random crop / flip")
    add_data_args(parser)
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="where to save the compressed model")
    add_json_arg(parser)
