"""The flags of the verbs that recipe stages run: train, finetune, distill, quantize and export.

The command line and the recipe schema (:mod:`torchslim.pipeline.schema`) both read them from here,
so a flag added to a verb is a recipe option at once.
"""

from __future__ import annotations

from ..checks import SEED, WIDTH
from .common import add_data_args, add_json_arg, add_kd_args, add_training_args

FORMATS = ("packed", "onnx", "openvino")
PACKED_SIDE_DTYPES = ("float32", "float16", "int8")
# flag -> the formats it does something for; given with another format it is an error (torchslim/checks.py)
FORMAT_ONLY = {"--huffman": ("packed",), "--dense": ("packed",), "--no-fold-bn": ("packed",),
               "--side-dtype": ("packed",), "--input": ("onnx",), "--opset": ("onnx",)}
ACT_SCALES = ("fit", "unit")
QUANTIZE_METHODS = ("bnn", "bnn-stochastic", "bwn", "xnor", "bireal", "twn", "dorefa", "hwgq-bwn", "hwgq-uniform-bwn",
               "hwgq-zero-uniform-bwn", "int8")


def add_train_flags(parser) -> None:
    """The flags of ``torchslim train``."""
    parser.add_argument("--model", required=True, metavar="SOURCE",
                        help="zoo model name (see `torchslim profile --list`), torchvision:NAME, timm:NAME "
                             "or PKG.MODULE:CALLABLE")
    parser.add_argument("--width-mult", type=WIDTH, default=1.0, help="channel width multiplier, in (0, 64]")
    add_data_args(parser)
    add_training_args(parser)
    parser.add_argument("--out", required=True, help="where to save the trained model")
    add_json_arg(parser)


def add_finetune_flags(parser) -> None:
    """The flags of ``torchslim finetune``."""
    parser.add_argument("file", help="a model saved by torchslim")
    parser.add_argument("--teacher", default=None, metavar="FILE", help="distil from this saved model")
    add_kd_args(parser)
    add_data_args(parser)
    add_training_args(parser)
    parser.set_defaults(epochs=2, lr=0.01)
    parser.add_argument("--out", required=True, help="where to save the fine-tuned model")
    add_json_arg(parser)


def add_distill_flags(parser) -> None:
    """The flags of ``torchslim distill``."""
    parser.add_argument("--teacher", required=True, metavar="FILE",
                        help="a model saved by torchslim (with --online: a file or a model source such as vgg14 or "
                             "torchvision:resnet18, trained from scratch)")
    parser.add_argument("--student", required=True, metavar="NAME",
                        help="the student: a zoo model (mobilenetv2, shufflenetv2, lenet5, shallow2, shallow3, or "
                             "the teacher's own architecture for a thin copy), a source such as "
                             "torchvision:mobilenet_v3_small, or a saved model file to train further")
    parser.add_argument("--width-mult", type=WIDTH, default=1.0, help="student width multiplier")
    parser.add_argument("--loss", default="hinton", help="hinton, mxnet or tf")
    parser.add_argument("--temperature", type=float, default=None, help="softening T > 0 (default: the loss's)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="teacher's share of the loss in [0, 1] (default: the loss's)")
    parser.add_argument("--hint", action="append", default=[], metavar="S_LAYER:T_LAYER",
                        help="also match this student layer's features to this teacher layer's (repeatable; "
                             "a 1x1 adapter bridges different widths)")
    parser.add_argument("--hint-weight", type=float, default=1.0, help="weight of the feature (hint) loss")
    parser.add_argument("--online", action="store_true", help="train teacher and student together")
    parser.add_argument("--teacher-width", type=WIDTH, default=1.0, help="width of a fresh --online teacher")
    parser.add_argument("--teacher-out", default=None, help="with --online: also save the trained teacher here")
    parser.add_argument("--compare", action="store_true",
                        help="also train the same student without a teacher (same budget, seed and start)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="keep the teacher's logits on disk for repeated runs (not with unseeded augmentation)")
    add_data_args(parser)
    add_training_args(parser)
    parser.add_argument("--out", required=True, help="where to save the trained student")
    add_json_arg(parser)


def add_quantize_flags(parser) -> None:
    """The flags of ``torchslim quantize``."""
    parser.add_argument("file", help="trained float model (.safetensors from torchslim train)")
    parser.add_argument("--method", required=True, help=", ".join(QUANTIZE_METHODS))
    parser.add_argument("--weight-bits", type=int, default=None)
    parser.add_argument("--act-bits", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tune epochs (default 3); 0 converts and calibrates only")
    parser.add_argument("--alt-update", action="store_true", help="layer-wise alternating update of BWN layers")
    parser.add_argument("--alt-init", action="store_true",
                        help="also run the alternating update before fine-tuning (binary weights that reproduce "
                             "the float layers' outputs as the starting point)")
    parser.add_argument("--alt-guard", dest="alt_guard", action="store_true", default=None,
                        help="--alt-update keeps a layer's new weights only if the network's outputs on the "
                             "next --calib training images (held out from the fit) move closer to the float model's "
                             "(the default with --alt-update: unguarded, it cost 5-6 points where it hurt)")
    parser.add_argument("--no-alt-guard", dest="alt_guard", action="store_false",
                        help="--alt-update keeps every layer's new weights (the unguarded update)")
    parser.add_argument("--act-scale", choices=ACT_SCALES, default=None,
                        help="HWGQ levels: 'fit' scales each layer's levels to its input on the calibration "
                             "images (the default), 'unit' keeps the unit half-normal levels")
    parser.add_argument("--keep-first-last", dest="keep_first_last", action="store_true", default=True,
                        help="keep the first and last layers float (default)")
    parser.add_argument("--no-keep-first-last", dest="keep_first_last", action="store_false")
    parser.add_argument("--teacher", nargs="?", const="self", default=None, metavar="FILE",
                        help="distil from a teacher during fine-tuning (no FILE: the input float model, which is "
                             "the default when the input model is float)")
    parser.add_argument("--no-teacher", action="store_true",
                        help="fine-tune on the labels alone, without the default teacher")
    add_kd_args(parser)
    parser.add_argument("--calib", type=int, default=1024, help="calibration images (BN, alt-update, int8)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--packed", default=None, metavar="FILE", help="also write the bit-packed file here")
    parser.add_argument("--packed-side", choices=PACKED_SIDE_DTYPES, default=None,
                        help="packed file: dtype of the binary layers' per-channel scale and bias (float32 is "
                             "exact; int8 keeps one float32 step per layer; the float layers stay float32)")
    add_data_args(parser)
    parser.add_argument("--out", required=True, help="output: frozen .safetensors, or .onnx for int8")
    add_json_arg(parser)


def add_export_flags(parser) -> None:
    """The flags of ``torchslim export``."""
    parser.add_argument("file", help="a model saved by torchslim (or a packed file)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--huffman", action="store_true", help="packed: entropy-code the codes and indices")
    parser.add_argument("--dense", action="store_true", help="packed: never store float weights as sparse")
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                        help="packed: keep each BatchNorm after a frozen low-bit layer (exact round trip) instead of "
                             "folding it into the layer's scale and bias")
    parser.add_argument("--side-dtype", choices=PACKED_SIDE_DTYPES, default="float32",
                        help="packed: dtype of frozen low-bit layers' per-channel scale and bias (int8: one float32 "
                             "step per tensor; smaller, not exact)")
    parser.add_argument("--input", help="onnx, openvino: input shape CxHxW (default: recorded in the file)")
    add_data_args(parser, required=False)
    parser.add_argument("--calib", type=int, default=300,
                        help="openvino: calibration images from --data for NNCF int8 (with --data; default 300)")
    parser.add_argument("--opset", type=int, default=17,
                        help="onnx: ONNX opset, within the range this torch's exporter supports")
    add_json_arg(parser)
    parser.set_defaults(applies={flag: ("format", formats) for flag, formats in FORMAT_ONLY.items()})


def add_import_flags(parser) -> None:
    """The flags of ``torchslim import`` (a recipe's ``load: {source: ...}`` stage runs it)."""
    parser.add_argument("source", help="zoo NAME, torchvision:NAME, timm:NAME or PKG.MODULE:CALLABLE, optionally "
                                       "followed by JSON options, e.g. 'timm:resnet18{\"drop_rate\": 0.1}'")
    parser.add_argument("--out", required=True, help="the torchslim file to write (.safetensors)")
    parser.add_argument("--weights", metavar="FILE",
                        help="a state dict: .pt/.pth (read with weights_only=True) or .safetensors")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N",
                        help="replace the classifier head with a fresh one for N classes (default: --data's)")
    parser.add_argument("--input", metavar="CxHxW", help="input shape (default: --data's, else the source model's)")
    parser.add_argument("--options", metavar="JSON", default=None, help="keyword arguments for the source's builder")
    parser.add_argument("--seed", type=int, default=0, help="seed of a replaced head's initial weights")
    add_data_args(parser, required=False)  # --data: the head and input shape follow the data set
    add_json_arg(parser)
