"""Flags several verbs share: data, training, distillation strength, ``--json`` and ``--trust``."""

from __future__ import annotations

from ..checks import NONNEG_INT, POSITIVE_INT, SEED, float_range


def add_data_args(parser, required: bool = True) -> None:
    parser.add_argument("--data", required=required, metavar="NAME[:DIR]",
                        help="data set name (fashion-mnist-32, cifar10:DIR, folder:DIR, digits, ...)")
    parser.add_argument("--subset", type=POSITIVE_INT, default=None, metavar="N",
                        help="use a deterministic N-sample subset (quick runs)")
    parser.add_argument("--holdout", type=NONNEG_INT, default=0, metavar="K",
                        help="reserve K training samples as a held-out calibration/validation split")
    add_image_args(parser)


def add_image_args(parser) -> None:
    """Image-folder flags: crop size, normalisation, unreadable files (see docs/guides/data.md)."""
    parser.add_argument("--image-size", type=int, default=None, metavar="PX",
                        help="folder data: square input side (default: the model's, else 32); 64 and up "
                             "stream from disk with resize + centre crop")
    parser.add_argument("--mean", default=None, metavar="M[,M,M]", help="per-channel mean in 0..1 units")
    parser.add_argument("--std", default=None, metavar="S[,S,S]", help="per-channel std in 0..1 units")
    parser.add_argument("--bad-images", default=None, choices=["error", "skip"],
                        help="folder data: stop at an unreadable image (default) or skip it and count")


def add_training_args(parser) -> None:
    """The flags of :class:`torchslim.train.TrainConfig`, shared by every verb that trains."""
    parser.add_argument("--epochs", type=NONNEG_INT, default=10)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    parser.add_argument("--lr", type=float_range(0, low_open=True), default=0.05)
    parser.add_argument("--optimizer", default="sgd", help="sgd or adam")
    parser.add_argument("--schedule", default="onecycle", help="onecycle, cosine, step or constant")
    parser.add_argument("--weight-decay", type=float_range(0), default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def add_kd_args(parser) -> None:
    """Distillation strength for verbs that take ``--teacher``."""
    parser.add_argument("--temperature", type=float, default=None, help="distillation temperature T > 0")
    parser.add_argument("--alpha", type=float, default=None, help="teacher's share of the loss in [0, 1]")


def add_json_arg(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def add_trust_arg(parser) -> None:
    """``--trust PKG``: every verb that loads a file may need it."""
    parser.add_argument("--trust", action="append", default=[], metavar="PKG",
                        help="allow importing PKG to rebuild a model made from your own code "
                             "(PKG.MODULE:CALLABLE); files never import anything else")
