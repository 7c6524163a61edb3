"""Fold each BatchNorm into the Linear/Conv just before it (deployment form).

Folding *before* pruning and weight sharing removes the BatchNorm parameters from
the compressed file, as a deployed network would have them.  The implementation is
the graph-based one in :mod:`torchslim.prune.deploy`, which finds every
layer -> BN pair through torch.fx, not only ``Sequential`` neighbours.
"""

from ..prune.deploy import fold_batchnorm

__all__ = ["fold_batchnorm"]
