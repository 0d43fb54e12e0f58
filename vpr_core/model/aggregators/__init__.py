"""Aggregation heads, one module per head; importing this package registers them all.

Registered names (see :data:`vpr_core.model.registry.HEADS`): ``gem``, ``boq``, ``salad``
(SelaVPR++), ``supervlad`` (SuperVLAD), ``amg_gem`` (HAM-VPR), ``cls`` (plain DINOv2).
"""
from vpr_core.model.aggregators import amg_gem, boq, cls, gem, salad, supervlad  # noqa: F401
