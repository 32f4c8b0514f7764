"""The sketching widget, headless: its handlers are plain methods, called here directly the
way ipycanvas would call them for mouse and touch events."""

import io
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
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


def test_max_side_still_downscales_when_asked(editor, photo):
    w = SketchWidget(editor, photo, display_size=64, max_side=24)
    assert w.session.current.size == (24, 16)
    assert (w.canvas.width, w.canvas.height) == (64, 43)


@pytest.fixture
def big_photo():
    """A 1600x1200 photo (a smooth gradient: quick to encode), 3x the canvas below."""
    gradient = Image.linear_gradient("L").resize((1600, 1200))
    return Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_180), gradient))


def test_large_photo_is_edited_and_saved_at_full_resolution(editor, big_photo, tmp_path):
    w = SketchWidget(editor, big_photo, display_size=512)
    assert w.session.current.size == (1600, 1200)  # not shrunk to 512 px any more
    assert "1600x1200" in w.status.value
    assert (w.canvas.width, w.canvas.height) == (512, 384)
    # What the canvas is sent: copies at the canvas's size, never megapixels.
    sent = []
    w._put_scaled = lambda layer, rgba: sent.append(rgba.shape)
    w.drag([(500, 600), (700, 650), (900, 600)], tool="sketch", width=1)
    result = w.apply()
    assert result.strategy == "crop" and result.image.size == (1600, 1200)
    assert sent and all(shape[:2] == (384, 512) for shape in sent)
    assert w.display_photo(w.session.current).shape == (384, 512, 4)
    # The status line: the real size, how and at what scale the model ran.
    assert "on the 1600x1200 photo" in w.status.value
    assert result.describe() in w.status.value
    assert f"works at {editor.working_size} px" in w.status.value
    # Outside the crop the saved photo is the input, bit for bit, at full resolution.
    saved = w.save(tmp_path / "big.png")
    with Image.open(saved) as img:
        out = np.asarray(img.convert("RGB"))
    assert out.shape == (1200, 1600, 3)
    box = result.regions[0].box
    outside = np.ones((1200, 1600), bool)
    outside[box.slices] = False
    assert outside.any()
    np.testing.assert_array_equal(out[outside], np.asarray(big_photo)[outside])


def test_thin_pen_is_visible_on_screen_and_stays_thin_for_the_model(editor, big_photo):
    w = SketchWidget(editor, big_photo, display_size=400)  # 0.25 canvas px per image px
    w.drag([(200, 300), (1400, 300)], tool="sketch", width=1)
    stroke = w.strokes[0]
    assert stroke.width * w.display_scale == pytest.approx(0.25)
    assert w.screen_width(stroke) >= 2.0  # drawn at least 2 canvas px wide
    assert w.stroke_layer.line_width >= 2.0
    sketch = w.sketch_array()
    assert sketch.shape == (1200, 1600)
    assert sketch.sum(axis=0)[200:1401].tolist() == [1] * 1201  # one pixel per column
    assert np.nonzero(sketch)[0].tolist() == [300] * 1201
    # A broad brush is drawn at its scaled width.
    w.drag([(800, 600)], tool="add", width=40)
    assert w.screen_width(w.strokes[-1]) == pytest.approx(10.0)


def test_a_second_click_after_apply_keeps_the_result_message(widget):
    """The browser sends a second click before the button is disabled; the kernel handles it
    after the edit, when there is nothing left to apply."""
    drag(widget, [(10, 20), (100, 20)])
    widget.apply()
    message = widget.status.value
    assert "Edit 1 applied" in message
    assert widget.apply() is None
    assert widget.status.value == message and widget.ignored_applies == 1
    # Once the status says something else, a click with nothing drawn explains itself.
    widget.undo_edit()
    assert widget.apply() is None and "Nothing to apply" in widget.status.value


class _TimidHead(torch.nn.Module):
    """A mask head whose prediction never reaches 0.5, like a model shown strokes far off
    its training scale (the starter's mask peaks at 0.39 on a 512 px photo, issue 11)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x):
        return 0.45 * self.head(x)


def test_status_says_when_the_predicted_mask_is_empty(photo):
    from sketchedit.editor import SketchEditor
    from sketchedit.nets import Generator, MaskEstimator

    estimator = MaskEstimator(cnum=4)
    estimator.mask_head = _TimidHead(estimator.mask_head)
    w = SketchWidget(SketchEditor(estimator, Generator(cnum=4)), photo, display_size=DISPLAY)
    drag(w, [(10, 20), (100, 20)])
    peak = float(w.preview_mask().max())
    assert 0 < peak < 0.45
    assert "predicted mask is empty" in w.status.value
    assert f"max {np.floor(peak * 100) / 100:.2f}" in w.status.value
    result = w.apply()
    assert not result.hard_mask.any()
    assert "Edit 1 applied" in w.status.value
    assert "predicted mask is empty" in w.status.value and "mask +" in w.status.value


def test_status_has_no_empty_mask_note_when_the_mask_is_not_empty(widget):
    drag(widget, [(10, 20), (100, 20)])
    widget.set_tool("add")
    widget.width_slider.value = 20
    drag(widget, [(50, 40)])
    result = widget.apply()
    assert result.hard_mask.any() and "empty" not in widget.status.value


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


def test_save_keeps_a_private_files_mode(widget, tmp_path):
    target = tmp_path / "private.png"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    assert widget.save(target, overwrite=True) == target
    assert target.read_bytes().startswith(b"\x89PNG")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # was widened to 0644


def test_save_refuses_to_replace_a_dangling_symlink(widget, tmp_path):
    link = tmp_path / "result.png"
    link.symlink_to(tmp_path / "gone" / "target.png")
    assert widget.save(link) is None and "exists" in widget.status.value
    assert link.is_symlink() and not (tmp_path / "gone").exists()
    # With the overwrite flag the link itself is replaced by the PNG (its target untouched).
    assert widget.save(link, overwrite=True) == link
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "gone").exists()


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
