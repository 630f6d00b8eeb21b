"""Distances between points given by Telegram locations and village centres."""

from __future__ import annotations

import math
from typing import Final

# Mean radius of the WGS84 ellipsoid (IUGG R1 = (2a + b) / 3), in metres.
EARTH_RADIUS_M: Final = 6_371_008.8


def valid_point(lat: float, lon: float) -> bool:
    """Whether (lat, lon) are finite numbers within -90..90 and -180..180 degrees."""
    for value in (lat, lon):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value):
            return False
    return -90 <= lat <= 90 and -180 <= lon <= 180


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine on a sphere of EARTH_RADIUS_M).

    Raises ValueError for a point that is not valid_point.
    """
    if not (valid_point(lat1, lon1) and valid_point(lat2, lon2)):
        raise ValueError(f"not a valid point: ({lat1}, {lon1}) or ({lat2}, {lon2})")
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    # rounding can push a a hair above 1 for antipodal points
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def far_from_centre(distance: float | None, radius_m: float) -> bool:
    """Whether a report's location lies outside the village radius.

    None (no location, or a village without a centre) is not "far": absence of evidence is
    shown as such elsewhere, not as a flag.
    """
    return distance is not None and distance > radius_m
