"""Low-rank factorisation: truncated SVD of Linear layers, spatial SVD of k x k convs,
Tucker-2 of convs; ranks by energy kept or by a MAC target.

    from torchslim.lowrank import LowRankConfig, factorize
    smaller = factorize(model, LowRankConfig(method="tucker", target_macs=0.5))
"""

from .apply import LOWRANK_METHODS, LowRankConfig, factorize, plan_factorization, register_method
from .decompose import energy_rank, spatial_svd_conv, svd_linear, tucker2_conv

__all__ = ["LOWRANK_METHODS", "LowRankConfig", "energy_rank", "factorize", "plan_factorization", "register_method",
           "spatial_svd_conv", "svd_linear", "tucker2_conv"]
