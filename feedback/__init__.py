"""The feedback models that answer a run (expert advisor, CLIP, the VLM, DriveVLM-RL's pathways), by name."""
