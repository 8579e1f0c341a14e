"""RLlib's algorithms (PPO, SAC, DreamerV3) on Mentor's driving env."""
