"""Parity of the two backends' worlds: the CARLA map (carla.Map, offline) against the SUMO net.

Both are put in the SUMO net's frame (the CARLA map is built with the net's netOffset), so the
same pose means the same place. Compared: the 192 px ego-centred road mask that the BEV renders
(IoU per pose) and planned routes (the fraction of each route's points within a tolerance of
the other route's polyline).

Poses and points given to the module-level functions are in CARLA coordinates (x, y metres,
yaw degrees, left-handed), like route suites store them.
"""

from __future__ import annotations

import cv2
import numpy as np

from envs.bev import BEV_SIZE, StaticLayers, world_to_pixel_matrix
from envs.carla.routing import distance_to_polyline
from envs.carla.town_map import CarlaTownMap
from envs.maps import MapSearch
from envs.types import Route

ROUTE_TOLERANCE_M = 2.5


def ego_road_mask(static: StaticLayers, x: float, y: float, yaw: float) -> np.ndarray:
    """The 192 px road channel around a pose (world frame of `static`), as BevRenderer warps it."""
    px_to_world = cv2.invertAffineTransform(world_to_pixel_matrix(x, y, yaw))
    w2r = static.world_to_raster_matrix()
    px_to_raster = w2r[:, :2] @ px_to_world
    px_to_raster[:, 2] += w2r[:, 2]
    return cv2.warpAffine(
        static.road,
        px_to_raster,
        (BEV_SIZE, BEV_SIZE),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def polyline_agreement(a: np.ndarray, b: np.ndarray, tol: float = ROUTE_TOLERANCE_M) -> tuple[float, float]:
    """(fraction of a's points within tol of polyline b, fraction of b's points within tol of a)."""
    return (float(np.mean(distance_to_polyline(a, b) <= tol)), float(np.mean(distance_to_polyline(b, a) <= tol)))


class TownPair:
    """One town as the SUMO backend runs it and as the CARLA map describes it, in one frame.

    Holds a SUMO simulation (libsumo: one per process), so close it, or use it as a context manager.
    """

    def __init__(self, town: str, maps_dir: str | None = None):
        from envs.sumo.simulation import SumoSettings, SumoSimulation  # libsumo only where needed

        self.town = town
        self.sumo = SumoSimulation(SumoSettings(town=town, maps_dir=maps_dir))
        try:
            self.network = self.sumo.network
            self.carla = CarlaTownMap.from_maps(town, MapSearch.from_settings(maps_dir), offset=self.network.offset)
        except Exception:
            self.sumo.close()
            raise

    def close(self) -> None:
        self.sumo.close()

    def __enter__(self) -> TownPair:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- sampling (net frame) ----------------------------------------------------------------
    def sample_poses(self, n: int, seed: int = 0) -> np.ndarray:
        """n poses [n, 3] (x, y, yaw) on the CARLA map's driving-lane centre lines."""
        poses = self.carla.lane_poses()
        return poses[np.random.default_rng(seed).choice(len(poses), size=n, replace=False)]

    def sample_route_pairs(
        self, k: int, seed: int = 0, min_distance: float = 80.0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """k (start, goal) point pairs on lanes outside junctions, at least min_distance apart."""
        rng = np.random.default_rng(seed)
        # Lane interiors only: a lane's end point is also a junction connector's start.
        poses = np.concatenate(
            [
                seg.xy[(seg.s > 2.0) & (seg.s < seg.length - 2.0)]
                for seg in self.carla.segments.values()
                if seg.junction < 0
            ]
        )
        pairs = []
        for _ in range(1000 * k):
            if len(pairs) == k:
                break
            a, b = poses[rng.choice(len(poses), size=2, replace=False)]
            if np.linalg.norm(a - b) >= min_distance:
                pairs.append((a, b))
        return pairs

    # ----- comparisons (net frame) -------------------------------------------------------------
    def masks(self, x: float, y: float, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """(CARLA road mask, SUMO road mask) at one pose, 192 px."""
        return ego_road_mask(self.carla.static_layers, x, y, yaw), ego_road_mask(self.sumo.static_layers, x, y, yaw)

    def iou(self, poses: np.ndarray) -> np.ndarray:
        return np.array([mask_iou(*self.masks(*pose)) for pose in np.asarray(poses, dtype=np.float64).reshape(-1, 3)])

    def routes(self, start_xy, goal_xy) -> tuple[Route, Route]:
        """(CARLA-map route, SUMO route) between the same two points."""
        _, sumo_route = self.network.plan(tuple(start_xy), tuple(goal_xy))
        return self.carla.plan(tuple(start_xy), tuple(goal_xy)), sumo_route

    def agreement(self, start_xy, goal_xy, tol: float = ROUTE_TOLERANCE_M) -> tuple[float, float]:
        """(fraction of the CARLA route within tol of the SUMO route, and the converse)."""
        carla_route, sumo_route = self.routes(start_xy, goal_xy)
        return polyline_agreement(carla_route.xy, sumo_route.xy, tol)

    def carla_to_net(self, x: float, y: float, yaw_deg: float = 0.0) -> tuple[float, float, float]:
        return self.network.from_carla(x, y, yaw_deg)


def road_mask_iou(town: str, poses, maps_dir: str | None = None) -> np.ndarray:
    """Per-pose IoU of the 192 px road masks from carla.Map and from the SUMO net.

    poses: [N, 3] in CARLA coordinates (x, y, yaw degrees).
    """
    with TownPair(town, maps_dir) as pair:
        net = [pair.carla_to_net(*p) for p in np.asarray(poses, dtype=np.float64).reshape(-1, 3)]
        return pair.iou(np.array(net))


def route_agreement(
    town: str, start, goal, maps_dir: str | None = None, tol: float = ROUTE_TOLERANCE_M
) -> tuple[float, float]:
    """(fraction of the carla.Map route's points within tol of the SUMO route, and the converse).

    start, goal: (x, y) in CARLA coordinates, on lanes outside junctions (SUMO plans from there).
    """
    with TownPair(town, maps_dir) as pair:
        s, g = pair.carla_to_net(*start[:2]), pair.carla_to_net(*goal[:2])
        return pair.agreement(s[:2], g[:2], tol)
