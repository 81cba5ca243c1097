"""The seven layers of a node, from the network up to the orchestrator."""

from __future__ import annotations

from typing import Final, Literal

Layer = Literal["root", "sacral", "solar_plexus", "heart", "throat", "third_eye", "crown"]

#: Bottom to top: root (network), sacral (GPU), solar_plexus (CPU), heart (memory),
#: throat (APIs), third_eye (inference), crown (orchestration).
LAYERS: Final[tuple[Layer, ...]] = (
    "root",
    "sacral",
    "solar_plexus",
    "heart",
    "throat",
    "third_eye",
    "crown",
)
