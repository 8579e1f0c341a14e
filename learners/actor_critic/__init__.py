"""Actor-critic agents on the DrQ-v2 layout with Found-RL's guidance: one shared update skeleton
(agent.py) and acting path (policy.py); each algorithm is a file (drqv2.py, sac.py, td3.py) that
supplies its losses and its exploration."""
