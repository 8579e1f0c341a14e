"""VL-SAFE's world model and safe actor-critic in imagination (agent.algorithm: vlsafe):
presets.py (sizes), networks.py (encoder, RSSM, decoder, heads, actor), agent.py (the update),
policy.py (recurrent acting), inspect.py (open-loop predictions, predicted safety, pictures).
The mathematics is in learners/losses/world_model.py."""
