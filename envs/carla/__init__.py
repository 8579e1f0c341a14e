"""The CARLA backend: town maps read offline through `carla.Map`, in Mentor's frame."""
