"""BiRefNet's variants as plain data, without torch: the model builds from these, and the CLI's
choices (which must load on a machine without torch) list them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int

    @property
    def num_features(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


SWIN_CONFIGS = {
    "swin_v1_t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_v1_s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_v1_b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_v1_l": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}
BACKBONES = tuple(SWIN_CONFIGS)
PATCH_ORDERS = ("legacy", "einops")  # the image-patch channel orders (model/decoder.py)
DEFORM_CONV_MODES = ("native", "grid_sample")  # how a deformable conv is exported (model/deform_conv.py)
