"""Fast Fourier convolution blocks (Chi et al. 2020), arranged as in LaMa (Suvorov et al. 2022).

An FFC splits its channels into a *local* part (ordinary 3x3 convolutions) and a *global*
part (a :class:`SpectralTransform`: 1x1 convolutions applied in the frequency domain of a
real 2-D FFT). A 1x1 convolution on Fourier coefficients mixes every spatial position at
once, so one block has an image-wide receptive field: the property CM-GAN borrows for its
encoder, because large holes need context from far away.

Normalisation is BatchNorm, as in LaMa. It behaves differently in train and eval mode; the
evaluator runs models in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn


class FourierUnit(nn.Module):
    """rFFT over (H, W) -> 1x1 conv on stacked (real, imag) channels -> BN -> ReLU -> irFFT."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch * 2, out_ch * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch * 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape  # (B, C, H, W)
        dtype = x.dtype
        # FFTs need fp32 (no half-precision FFT on CPU; bf16 loses too much).
        ff: torch.Tensor = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1) complex
        ff = torch.cat([ff.real, ff.imag], dim=1).to(dtype)  # (B, 2C, H, W//2+1)
        ff = self.act(self.bn(self.conv(ff)))
        real, imag = ff.float().chunk(2, dim=1)  # each (B, C_out, H, W//2+1)
        out: torch.Tensor = torch.fft.irfft2(torch.complex(real, imag), s=(h, w), norm="ortho")
        return out.to(dtype)


class SpectralTransform(nn.Module):
    """The global branch: 1x1 reduce -> Fourier unit (residual) -> 1x1 expand."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        hidden = max(out_ch // 2, 1)
        self.reduce = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.fourier = FourierUnit(hidden, hidden)
        self.expand = nn.Conv2d(hidden, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        out: torch.Tensor = self.expand(x + self.fourier(x))
        return out


class FFC(nn.Module):
    """One fast Fourier convolution over a (local, global) channel split.

    Args:
        channels: total channels (input = output).
        ratio_global: fraction of channels in the global (spectral) part, 0 < r < 1.
        kernel_size: kernel of the local convolutions.
    """

    def __init__(self, channels: int, ratio_global: float = 0.75, kernel_size: int = 3) -> None:
        super().__init__()
        self.c_global = int(round(channels * ratio_global))
        self.c_local = channels - self.c_global
        if self.c_global < 1 or self.c_local < 1:
            raise ValueError(
                f"FFC needs >= 1 local and >= 1 global channel; channels={channels}, ratio_global={ratio_global}"
            )
        pad = kernel_size // 2
        cl, cg = self.c_local, self.c_global
        self.l2l = nn.Conv2d(cl, cl, kernel_size, padding=pad, padding_mode="reflect", bias=False)
        self.l2g = nn.Conv2d(cl, cg, kernel_size, padding=pad, padding_mode="reflect", bias=False)
        self.g2l = nn.Conv2d(cg, cl, kernel_size, padding=pad, padding_mode="reflect", bias=False)
        self.g2g = SpectralTransform(cg, cg)
        self.bn_l, self.bn_g = nn.BatchNorm2d(cl), nn.BatchNorm2d(cg)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_l, x_g = torch.split(x, [self.c_local, self.c_global], dim=1)
        out_l = self.act(self.bn_l(self.l2l(x_l) + self.g2l(x_g)))
        out_g = self.act(self.bn_g(self.l2g(x_l) + self.g2g(x_g)))
        return torch.cat([out_l, out_g], dim=1)


class FFCResBlock(nn.Module):
    """Two FFCs with a residual connection (LaMa's FFCResnetBlock)."""

    def __init__(self, channels: int, ratio_global: float = 0.75) -> None:
        super().__init__()
        self.ffc1 = FFC(channels, ratio_global)
        self.ffc2 = FFC(channels, ratio_global)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.ffc2(self.ffc1(x))
        return x + residual
