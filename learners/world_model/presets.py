"""World-model sizes (agent.vlsafe.preset). `debug` trains in seconds on a CPU (it reconstructs the
BEV at half resolution, 48x48, against the 2x max-pooled masks); S, M and L are for GPUs and follow
DreamerV3's size ladder (deterministic state, categorical latents, MLP units, conv depth)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldModelSize:
    conv_channels: tuple[int, int, int, int]  # the BEV encoder's four stride-2 convs (96 -> 6 px)
    deter: int  # GRU state
    stoch_groups: int  # categorical latents: groups x classes
    stoch_classes: int
    units: int  # every MLP's width
    decoder_px: int  # reconstructed BEV side: 96 (full) or 48 (half)

    @property
    def feature_dim(self) -> int:
        """[h, z] as the heads, critics and actor see it."""
        return self.deter + self.stoch_groups * self.stoch_classes


PRESETS: dict[str, WorldModelSize] = {
    "debug": WorldModelSize((8, 16, 32, 32), deter=128, stoch_groups=8, stoch_classes=8, units=128, decoder_px=48),
    "S": WorldModelSize((32, 64, 128, 256), deter=512, stoch_groups=32, stoch_classes=16, units=256, decoder_px=96),
    "M": WorldModelSize((48, 96, 192, 384), deter=1024, stoch_groups=32, stoch_classes=32, units=512, decoder_px=96),
    "L": WorldModelSize((64, 128, 256, 512), deter=2048, stoch_groups=32, stoch_classes=32, units=768, decoder_px=96),
}
