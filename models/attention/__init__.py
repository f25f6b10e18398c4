"""Attention blocks, one file per family; each is also importable from `models.common`."""
from models.attention.channel import ECA, SE
from models.attention.conv import SCConv, DynamicConv, SKAttention, SplitAttn
from models.attention.global_context import DoubleAttention
from models.attention.soca import SOCA
from models.attention.spatial import CBAM, SGE, CoordAtt, SimAM, scSE

# names used by the seed posts and their yamls
SElayer = SEAttention = SE
DoubleAttentionLayer = A2 = DoubleAttention
SKConv = SKAttention
SpatialGroupEnhance = SGE
ResNeSt = SplitAttn
Dynamic_conv2d = DynamicConv

__all__ = (
    "SOCA", "SE", "SElayer", "SEAttention", "CBAM", "DoubleAttention", "DoubleAttentionLayer", "A2",
    "SKAttention", "SKConv", "scSE", "SGE", "SpatialGroupEnhance", "SCConv", "SplitAttn", "ResNeSt",
    "DynamicConv", "Dynamic_conv2d", "ECA", "CoordAtt", "SimAM",
)
