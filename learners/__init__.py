"""Learning: the replay and its journal, batches, networks, losses, agents, the world model, the learner."""
