"""Building, training and evaluating Mentor's own foundation models (CLIP, the VLM)."""
