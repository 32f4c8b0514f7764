"""The web app's page, headless: which models it offers, switching models, the download.
(The real-browser test of the same page is tests/test_app_browser.py.)"""

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ipycanvas")

from sketchedit.app import OFFICIAL_ENV, SketchApp, download_name, model_choices  # noqa: E402
from sketchedit.editor import STARTER_CHECKPOINT  # noqa: E402


@pytest.fixture
def photo():
    """A 900x600 photo: larger than the app's 640-px canvas."""
    gradient = Image.linear_gradient("L").resize((900, 600))
    return Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient)
    )


def test_only_the_starter_without_configuration():
    choices, note = model_choices({})
    assert [c.key for c in choices] == ["starter"]
    assert "not configured" in note and all(name in note for name in OFFICIAL_ENV)


def test_official_checkpoints_are_offered_when_both_files_exist(tmp_path):
    m, g = tmp_path / "latest_net_M.pth", tmp_path / "latest_net_G.pth"
    m.write_bytes(b"")
    g.write_bytes(b"")
    choices, note = model_choices(dict(zip(OFFICIAL_ENV, (str(m), str(g)), strict=True)))
    assert [c.key for c in choices] == ["starter", "official"] and note == ""
    g.unlink()
    choices, note = model_choices(dict(zip(OFFICIAL_ENV, (str(m), str(g)), strict=True)))
    assert [c.key for c in choices] == ["starter"] and str(g) in note and "not found" in note


def test_a_missing_own_checkpoint_is_reported_not_offered(tmp_path):
    choices, note = model_choices({"SKETCHEDIT_CHECKPOINT": str(tmp_path / "nope.safetensors")})
    assert [c.key for c in choices] == ["starter"] and "nope.safetensors" in note


def test_page_without_configuration(photo):
    app = SketchApp(photo, environ={})
    assert app.model_menu.disabled and app.model_menu.value == "starter"
    assert "not configured" in app.model_note.value
    # A web page downloads its result; the server-side save controls are hidden.
    assert app.widget.save_button.layout.display == "none"
    assert app.widget.session.current.size == (900, 600)


def test_download_sends_the_full_resolution_photo(photo):
    app = SketchApp(photo, environ={})
    w = app.widget
    w.drag([(600, 100), (700, 60), (800, 120)], tool="sketch", width=1)
    result = w.apply()
    assert "on the 900x600 photo" in w.status.value
    data = app.download()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.size == (900, 600)
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), np.asarray(result.image))
    assert "photo_sketchedit.png" in w.status.value and "900x600" in w.status.value


def test_download_is_named_after_the_upload(photo):
    app = SketchApp(photo, environ={})
    buf = io.BytesIO()
    photo.save(buf, format="JPEG")
    assert app.widget.load_image_bytes(buf.getvalue(), "holiday.jpg")
    app.download()
    assert "holiday_sketchedit.png" in app.widget.status.value
    assert download_name("") == "photo_sketchedit.png"


def test_switching_models_keeps_the_photo_and_reports_a_broken_file(photo, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    app = SketchApp(photo, environ={"SKETCHEDIT_CHECKPOINT": str(broken)})
    assert not app.model_menu.disabled
    starter = app.widget.editor
    app.model_menu.value = "checkpoint"  # what choosing it in the menu does
    assert "Could not load" in app.widget.status.value
    assert app.widget.editor is starter and app.widget.session.editor is starter

    app = SketchApp(photo, environ={"SKETCHEDIT_CHECKPOINT": str(STARTER_CHECKPOINT)})
    starter = app.widget.editor
    app.model_menu.value = "checkpoint"
    assert app.widget.editor is not starter and app.widget.session.editor is app.widget.editor
    assert "working size 64 px" in app.widget.status.value
    assert app.widget.session.current.size == (900, 600)
