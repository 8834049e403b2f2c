"""The enclosure (hardware/enclosure.scad) renders with OpenSCAD for 3 to 5 buttons, with and without
the battery bay, and its figures hold: the official cannot see the caps, the citizen sees them square
on, and the solid has the size the source says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
SCAD = Path(__file__).resolve().parents[2] / "hardware" / "enclosure.scad"


def openscad() -> str:
    exe = shutil.which("openscad")
    if exe is None:
        pytest.fail(
            "openscad is not installed: run `scripts/setup.sh --test` "
            "(or `sudo apt-get install --no-install-recommends openscad`)"
        )
    return exe


Render = tuple[dict[str, float], list[str], list[float], list[list[float]]]


def render(tmp_path: Path, **params: object) -> Render:
    """Render to ASCII STL; return the SIPAS figures, the warnings, the bounding box, the vertices."""
    out = tmp_path / f"x{len(list(tmp_path.iterdir()))}.stl"
    args = [openscad(), "-o", str(out), "-D", "$fn=24"]
    for k, v in params.items():
        args += ["-D", f'{k}="{v}"' if isinstance(v, str) else f"{k}={str(v).lower()}"]
    p = subprocess.run([*args, str(SCAD)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "not a valid 2-manifold" not in p.stderr, p.stderr
    figures = {m[1]: float(m[2]) for m in re.finditer(r'ECHO: "SIPAS (\w+)=([-\d.e]+)"', p.stderr)}
    warnings = re.findall(r'ECHO: "WARNING: ([^"]*)"', p.stderr)
    xyz = [
        [float(c) for c in m[1].split()]
        for m in re.finditer(r"vertex\s+(\S+\s+\S+\s+\S+)", out.read_text())
    ]
    assert len(xyz) > 100, "empty solid"
    box = [min(v[i] for v in xyz) for i in range(3)] + [max(v[i] for v in xyz) for i in range(3)]
    return figures, warnings, box, xyz


def test_shell_renders_for_3_and_5_buttons(tmp_path: Path) -> None:
    f3, w3, box3, _ = render(tmp_path, part="shell", n_buttons=3)
    assert w3 == []
    assert box3[:3] == pytest.approx([0, 0, 0], abs=0.01)
    assert box3[3:] == pytest.approx([f3["width_mm"], f3["depth_mm"], f3["height_mm"]], abs=0.01)
    # the official's eye across the desk is below the line over the hood: the caps are hidden ...
    assert f3["official_sees_caps_above_mm"] > f3["official_eye_mm"] + 100
    # ... and the panel faces the seated citizen nearly square on
    assert f3["citizen_view_off_deg"] < 15
    assert f3["body_clearance_mm"] > 2

    f5, w5, box5, _ = render(tmp_path, part="shell", n_buttons=5, button_d=50)
    assert w5 == []
    assert f5["width_mm"] == pytest.approx(f3["width_mm"] + 2 * (50 + 18) - 3 * 10)
    assert box5[3] == pytest.approx(f5["width_mm"], abs=0.01)


def test_a_flat_panel_without_a_hood_is_reported_as_visible(tmp_path: Path) -> None:
    f, warnings, _, _ = render(tmp_path, part="shell", panel_angle=15, hood_h=0)
    assert f["official_sees_caps_above_mm"] < f["official_eye_mm"]
    assert any("can see the caps" in w for w in warnings)


def test_base_with_battery_bay_renders(tmp_path: Path) -> None:
    _, _, plain, plain_xyz = render(tmp_path, part="base", battery_bay=False)
    _, warnings, bay, bay_xyz = render(tmp_path, part="base", battery_bay=True)
    assert warnings == []
    assert plain[:2] == bay[:2] and plain[5] == bay[5]  # same plate, same standoffs

    def front_frame(xyz: list[list[float]]) -> bool:  # anything standing on the plate's front
        return any(z > 3.01 and y < 15 for _, y, z in xyz)

    # the 18650 cell's frame lies under the citizen-side edge, only with the battery bay
    assert front_frame(bay_xyz) and not front_frame(plain_xyz)
