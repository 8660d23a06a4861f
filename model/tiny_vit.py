"""TinyViT, the image encoder of LiteMedSAM (reference notes §13), in plain torch.

Written from the published architecture (TinyViT, Wu et al. 2022, as MobileSAM adapted it for SAM and
LiteMedSAM's ``tiny_vit_sam.py`` adapted it for 256-px medical images): a convolutional first stage
(MBConv blocks), then windowed-attention stages (TinyViT blocks), then SAM's neck to a 256-channel
embedding. LiteMedSAM's patch embedding is two 1x1 convolutions (no downsampling) and the merge into the
last stage keeps the resolution, so a (B, 3, 256, 256) image gives a (B, 256, 64, 64) embedding, the
grid SAM's prompt encoder and mask decoder expect.

Only the encoder belongs here: no classifier head (the SAM variants drop it), no drop-path (the identity
at inference) and so no timm. Module and parameter names follow the upstream code, so LiteMedSAM's
``image_encoder.*`` weights load strictly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.sam_parts import LayerNorm2d


class Conv2dBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (upstream ``Conv2d_BN``; keys ``c.*`` and ``bn.*``)."""

    def __init__(self, in_chans: int, out_chans: int, *, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        # eval: BatchNorm folded into the conv's weights, one pass over activations that dominate the encoder's time
        c, bn = self.c, self.bn
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # (out_chans,)
        return F.conv2d(x, c.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale,
                        c.stride, c.padding, c.dilation, c.groups)


class PatchEmbed(nn.Module):
    """(B, in_chans, H, W) -> (B, embed_dim, H, W): LiteMedSAM's 1x1 stem keeps the resolution."""

    def __init__(self, *, in_chans: int, embed_dim: int):
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project) on (B, C, H, W)."""

    def __init__(self, *, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)  # starts as the identity block
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.conv1(x))  # (B, hidden, H, W)
        h = self.act2(self.conv2(h))
        h = self.conv3(h)  # (B, C, H, W)
        return self.act3(h + x)


class PatchMerging(nn.Module):
    """(B, dim, H, W) -> (B, out_dim, H / stride, W / stride) by a 1x1, a strided 3x3 depthwise and a 1x1 conv."""

    def __init__(self, *, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, kernel_size=3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))  # (B, out_dim, H / stride, W / stride)
        return self.conv3(x)


class ConvLayer(nn.Module):
    """The first stage: ``depth`` MBConv blocks, then an optional merge; (B, C, H, W) in and out."""

    def __init__(self, *, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim=dim, expand_ratio=expand_ratio) for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm MLP on (..., dim)."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-norm multi-head attention inside one window, with a learned bias per head and per |dy|, |dx| offset.

    (B', N, dim) -> (B', N, dim) with N = window_size ** 2 tokens.
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # one bias per head and distinct offset; idxs maps each (query, key) pair of the window to its offset
        points = list(itertools.product(range(window_size), range(window_size)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = [offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)) for p in points for q in points]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(len(points), len(points)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)  # per head: q, k, v
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)  # each (B', heads, N, head_dim)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        # spelt out as upstream does: on a CPU, scaled_dot_product_attention with a bias runs 1.3-4x slower than
        # this for windows of 49 and 196 tokens (its kernel is made for long sequences)
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + bias
        x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class TinyViTBlock(nn.Module):
    """Windowed attention, a 3x3 depthwise conv, an MLP; (B, H, W, C) in and out."""

    def __init__(self, *, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got {dim} and {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim=dim, num_heads=num_heads, window_size=window_size)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, kernel_size=local_conv_size, padding=local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window_size
        pad_b, pad_r = (s - h % s) % s, (s - w % s) % s
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # zeros, attended to like upstream (no mask)
        nh, nw = (h + pad_b) // s, (w + pad_r) // s
        x = x.view(b, nh, s, nw, s, c).transpose(2, 3).reshape(b * nh * nw, s * s, c)  # (B * windows, s*s, C)
        x = self.attn(x)
        x = x.view(b, nh, nw, s, s, c).transpose(2, 3).reshape(b, nh * s, nw * s, c)
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._window_attention(x)  # (B, H, W, C)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """An attention stage: ``depth`` TinyViT blocks, then an optional merge; (B, C, H, W) in and out."""

    def __init__(self, *, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 local_conv_size: int, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList([
            TinyViTBlock(dim=dim, num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio,
                         local_conv_size=local_conv_size)
            for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C): the blocks work on tokens
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: (B, in_chans, img_size, img_size) -> (B, 256, img_size / 4, ...).

    Stage ``i`` has ``embed_dims[i]`` channels and ``depths[i]`` blocks; the first is convolutional, the others
    use windowed attention with ``num_heads[i]`` heads and ``window_sizes[i]``. Each stage but the last ends by
    merging to the next one's width, halving the resolution except into the last stage (SAM keeps its grid).
    """

    def __init__(self, *, img_size: int = 256, in_chans: int = 3, embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3, out_chans: int = 256):
        super().__init__()
        n = len(embed_dims)
        if not n == len(depths) == len(num_heads) == len(window_sizes) or n < 2:
            raise ValueError(f"embed_dims, depths, num_heads and window_sizes must have one entry per stage (>= 2), "
                             f"got {len(embed_dims)}, {len(depths)}, {len(num_heads)}, {len(window_sizes)}")
        self.img_size = img_size  # read by the SAM-style preprocessing and by MediRound
        self.patch_embed = PatchEmbed(in_chans=in_chans, embed_dim=embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(n):
            merge = None
            if i < n - 1:
                merge = PatchMerging(dim=embed_dims[i], out_dim=embed_dims[i + 1], stride=1 if i == n - 2 else 2)
            if i == 0:
                layer = ConvLayer(dim=embed_dims[0], depth=depths[0], expand_ratio=mbconv_expand_ratio,
                                  downsample=merge)
            else:
                layer = BasicLayer(dim=embed_dims[i], depth=depths[i], num_heads=num_heads[i],
                                   window_size=window_sizes[i], mlp_ratio=mlp_ratio, local_conv_size=local_conv_size,
                                   downsample=merge)
            self.layers.append(layer)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # faster convs; the blocks' token view is then free
        x = self.patch_embed(x)  # (B, 64, 256, 256) for LiteMedSAM
        for layer in self.layers:
            x = layer(x)  # (B, 128, 128, 128), (B, 160, 64, 64), (B, 320, 64, 64), (B, 320, 64, 64)
        return self.neck(x)  # (B, 256, 64, 64)


def _init_weights(module: nn.Module) -> None:
    """Upstream's initialisation (for training from scratch; pretrained weights replace it)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
