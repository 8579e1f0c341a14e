"""Acting with the world model: the encoder and the RSSM filter the observations into the state (h, z),
the actor acts on its features. Recurrent: the carry is (h, z, the previous action) per environment,
and it starts from zero wherever `is_first` marks the first observation of an episode."""

from __future__ import annotations

import numpy as np
import torch

from configs.schema import AgentConfig
from learners.actor_critic.networks import visible_state
from learners.world_model.networks import Actor, WorldModel
from learners.world_model.presets import PRESETS

Carry = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def build_acting(config: AgentConfig, seed: int) -> tuple[WorldModel, Actor]:
    """The model and actor from `seed` on the CPU, identical for the agent and its policy."""
    size = PRESETS[config.params.preset]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = WorldModel(size)
        actor = Actor(size, config.params.exploration_std_min)
    return model, actor


def acting_weights(model: WorldModel, actor: Actor) -> dict[str, torch.Tensor]:
    """CPU copies of what acting needs: the observation encoder, the RSSM and the actor."""
    parts = {"model.encoder": model.encoder, "model.rssm": model.rssm, "actor": actor}
    return {
        f"{prefix}.{key}": value.detach().to("cpu", copy=True)
        for prefix, module in parts.items()
        for key, value in module.state_dict().items()
    }


class WorldModelPolicy:
    def __init__(self, config: AgentConfig, seed: int = 0, device: str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.model, self.actor = build_acting(config, seed)
        self.model.to(self.device).eval()
        self.actor.to(self.device).eval()
        self._rng = torch.Generator(device=self.device).manual_seed(seed + 1)

    def initial_carry(self, batch_size: int) -> Carry:
        h, z = self.model.rssm.initial(batch_size, self.device)
        return h, z, torch.zeros(batch_size, 2, device=self.device)

    @torch.no_grad()
    def act(self, carry: Carry, obs, is_first: np.ndarray, *, explore: bool, step: int) -> tuple[Carry, np.ndarray]:
        h, z, prev_action = carry
        bev = torch.as_tensor(obs["bev"], device=self.device)
        state = visible_state(torch.as_tensor(obs["state"], device=self.device, dtype=torch.float32), self.config)
        embed = self.model.encoder(bev, state)
        first = torch.as_tensor(np.asarray(is_first, bool), device=self.device)
        h, z, _, _ = self.model.rssm.observe_step(
            h, z, prev_action, embed, first, mode=not explore, generator=self._rng
        )
        feat = self.model.features(h, z)
        action = self.actor.sample(feat, self._rng) if explore else self.actor.mode(feat)
        return (h, z, action), action.cpu().numpy().astype(np.float32)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        for prefix, module in (
            ("model.encoder.", self.model.encoder),
            ("model.rssm.", self.model.rssm),
            ("actor.", self.actor),
        ):
            module.load_state_dict(
                {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
            )
