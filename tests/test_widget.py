"""The sketching widget, headless: its handlers are plain methods, called here directly the
way ipycanvas would call them for mouse and touch events."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ipycanvas")

from sketchedit.widget import SketchWidget, Stroke, rasterize_strokes  # noqa: E402

H, W = 32, 48  # a non-square photo...
DISPLAY = 120  # ...shown 2.5x larger: canvas 120 x 80


@pytest.fixture
def photo(rng):
    return Image.fromarray(rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8), mode="RGB")


@pytest.fixture
def widget(editor, photo):
    return SketchWidget(editor, photo, display_size=DISPLAY)


def drag(w, points):
    """Press at the first canvas point, move through the others, release at the last."""
    w.on_down(*points[0])
    for p in points[1:]:
        w.on_move(*p)
    w.on_up(*points[-1])


def test_import_sketchedit_does_not_import_the_notebook_stack():
    code = (
        "import sys, sketchedit, sketchedit.editor; "
        "sketchedit.SketchEditor; "
        "bad = [m for m in ('ipywidgets', 'ipycanvas', 'IPython') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_canvas_has_image_aspect_and_maps_coordinates(widget):
    assert (widget.canvas.width, widget.canvas.height) == (120, 80)
    assert widget.display_scale == pytest.approx(2.5)
    assert widget.canvas_to_image(0, 0) == (0.0, 0.0)
    assert widget.canvas_to_image(60, 40) == pytest.approx((24.0, 16.0))
    assert widget.canvas_to_image(25, 75) == pytest.approx((10.0, 30.0))
    x, y = widget.image_to_canvas(*widget.canvas_to_image(37.5, 12.5))
    assert (x, y) == pytest.approx((37.5, 12.5))
    # Outside the canvas (mouse-out events): clamped into the image.
    xi, yi = widget.canvas_to_image(500, -3)
    assert W - 1 < xi < W and yi == 0


def test_stroke_is_rasterised_at_image_resolution(widget):
    # Canvas (10, 20) -> (100, 20) is image (4, 8) -> (40, 8): one row, columns 4..40.
    drag(widget, [(10, 20), (50, 20), (100, 20)])
    assert len(widget.strokes) == 1 and widget.strokes[0].tool == "sketch"
    assert widget.strokes[0].points[0] == pytest.approx((4.0, 8.0))
    sketch = widget.sketch_array()
    assert sketch.shape == (H, W)
    expected = np.zeros((H, W), np.float32)
    expected[8, 4:41] = 1
    np.testing.assert_array_equal(sketch, expected)
    assert not widget.add_array().any() and not widget.erase_array().any()


def test_diagonal_stroke_is_connected():
    stroke = Stroke("sketch", 1, [(2.5, 2.5), (20.5, 14.5)])
    r = rasterize_strokes([stroke], (24, 16), "sketch")
    ys, xs = np.nonzero(r)
    assert r[2, 2] == 1 and r[14, 20] == 1
    # 8-connected thin line: one pixel per column from x=2 to x=20.
    assert sorted(set(xs)) == list(range(2, 21)) and len(xs) == 19


def test_touch_and_mouse_out(widget):
    widget.on_touch_start([(10, 10)])
    widget.on_touch_move([(30, 10)])
    widget.on_touch_end([])  # the lifted finger is no longer listed
    assert widget.strokes[0].points == [pytest.approx((4, 4)), pytest.approx((12, 4))]
    widget.on_down(10, 60)
    widget.on_move(60, 60)
    widget.on_out(130, 60)  # left the canvas: the stroke ends at the border
    widget.on_move(10, 10)  # no button down any more: ignored
    assert len(widget.strokes) == 2 and widget.strokes[1].points[-1][0] > W - 1


def test_undo_stroke_and_clear(widget):
    drag(widget, [(10, 20), (100, 20)])
    drag(widget, [(10, 60), (100, 60)])
    widget.undo_stroke()
    assert len(widget.strokes) == 1 and widget.sketch_array()[24].sum() == 0
    widget.clear()
    assert widget.strokes == [] and not widget.sketch_array().any()


def test_mask_brushes_and_overlay(widget):
    widget.set_tool("add")
    widget.width_slider.value = 6  # image px, for the current tool only
    drag(widget, [(50, 40)])  # a dab at image (20, 16)
    add = widget.add_array()
    assert add[16, 20] == 1 and add[16, 17] == 1 and add[16, 25] == 0 and add[0, 0] == 0
    assert widget.widths["add"] == 6 and widget.widths["sketch"] == 1
    widget.set_tool("erase")
    drag(widget, [(50, 40)])
    erased = widget.displayed_mask()
    assert erased is not None and not erased.any()  # erase wins over add
    widget.undo_stroke()
    np.testing.assert_array_equal(widget.displayed_mask(), add)


def test_apply_undo_redo_and_revise(widget, photo):
    drag(widget, [(10, 20), (60, 30), (100, 20)])
    result = widget.apply()
    assert result is not None and result.ran_model
    assert widget.session.current == result.image
    assert widget.strokes == []
    assert np.asarray(result.input_image).tobytes() == np.asarray(photo).tobytes()
    assert "Edit 1 applied" in widget.status.value
    np.testing.assert_array_equal(widget.displayed_mask(), result.used_mask)
    # Nothing drawn: apply does nothing (a queued second click is harmless).
    assert widget.apply() is None and len(widget.session.history) == 1

    # Revise the last edit with the mask brushes only: erase the left half of its mask.
    widget.set_tool("erase")
    widget.width_slider.value = 48
    drag(widget, [(0, 0), (0, 80)])
    revised = widget.apply()
    assert "revised" in widget.status.value and len(widget.session.history) == 2
    np.testing.assert_array_equal(revised.sketch, result.sketch)
    assert (revised.used_mask[:, :20] == 0).all()
    keep = revised.used_mask == 0
    np.testing.assert_array_equal(np.asarray(revised.image)[keep], np.asarray(photo)[keep])

    assert not widget.undo_edit_button.disabled and widget.redo_edit_button.disabled
    widget.undo_edit()
    assert widget.session.current == result.image and widget.session.can_redo
    assert not widget.redo_edit_button.disabled
    widget.undo_edit()
    assert widget.session.current.tobytes() == photo.tobytes()
    widget.undo_edit()
    assert "Nothing to undo" in widget.status.value
    widget.redo_edit()
    assert widget.session.current == result.image


def test_new_sketch_with_mask_revision_and_preview(widget):
    drag(widget, [(10, 20), (100, 20)])
    predicted = widget.preview_mask()
    np.testing.assert_array_equal(widget.displayed_mask(), predicted)
    widget.set_tool("add")
    widget.width_slider.value = 8
    drag(widget, [(100, 70)])  # image (40, 28)
    shown = widget.displayed_mask()
    assert shown[28, 40] == 1
    result = widget.apply()
    np.testing.assert_allclose(result.used_mask, shown, atol=1e-6)


def test_busy_apply_ignores_a_duplicate_click(widget, monkeypatch):
    calls, inner = [], []
    original_edit = widget.editor.edit

    def slow_edit(*args, **kwargs):
        calls.append(1)
        assert widget.apply_button.disabled and widget.busy
        assert "Running" in widget.status.value
        inner.append(widget.apply())  # a second click arriving while the model runs
        widget.on_down(5, 5)  # drawing is ignored while busy too
        return original_edit(*args, **kwargs)

    monkeypatch.setattr(widget.editor, "edit", slow_edit)
    drag(widget, [(10, 20), (100, 20)])
    assert widget.apply() is not None
    assert calls == [1] and inner == [None] and widget.ignored_applies == 1
    assert not widget.busy and not widget.apply_button.disabled
    assert widget.strokes == []


def test_upload_bad_and_good_files(widget, photo):
    assert widget.load_image_bytes(b"this is not a PNG", "notes.txt") is False
    assert "Could not read 'notes.txt'" in widget.status.value
    assert widget.session.current.tobytes() == photo.tobytes()

    buf = io.BytesIO()
    Image.new("RGBA", (20, 40), (10, 200, 30, 255)).save(buf, format="PNG")
    upload = {
        "name": "tall.png",
        "type": "image/png",
        "size": 1,
        "content": memoryview(buf.getvalue()),
    }
    widget._on_upload({"new": (upload,)})  # what ipywidgets.FileUpload sends
    assert widget.session.current.size == (20, 40)
    assert widget.upload.value == ()  # reset, so the same file can be uploaded again
    assert (widget.canvas.width, widget.canvas.height) == (60, 120)
    assert widget.canvas_to_image(30, 60) == pytest.approx((10, 20))
    assert not widget.session.can_undo


def test_large_upload_is_downscaled(editor, photo):
    w = SketchWidget(editor, photo, display_size=64, max_side=24)
    assert w.session.current.size == (24, 16)
    assert (w.canvas.width, w.canvas.height) == (64, 43)


def test_save_is_atomic_png_and_refuses_to_overwrite(widget, tmp_path):
    drag(widget, [(10, 20), (100, 20)])
    widget.apply()
    target = tmp_path / "out.png"
    widget.filename.value = str(target)
    assert widget.save() == target
    with Image.open(target) as img:
        assert img.tobytes() == widget.session.current.tobytes()
    target.write_bytes(b"keep me")
    assert widget.save() is None and "exists" in widget.status.value
    assert target.read_bytes() == b"keep me"
    widget.overwrite_box.value = True
    assert widget.save() == target and target.read_bytes().startswith(b"\x89PNG")
    assert widget.save(tmp_path / "out.jpg") is None and ".png" in widget.status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp files left


def test_toggles_and_state(widget):
    drag(widget, [(10, 20), (100, 20)])
    widget.apply()
    widget.compare_toggle.value = True  # shows the photo before the edit: must not fail
    widget.show_mask_toggle.value = False
    state = widget.state()
    assert state["image_size"] == [W, H] and state["canvas_size"] == [120, 80]
    assert state["edits"] == 1 and state["can_undo"] and not state["busy"]
    import json

    json.dumps(state)
