"""A sketching widget for Jupyter: draw a partial sketch on a photo, revise the mask, apply.

``SketchWidget(editor, image)`` shows the photo on an ipycanvas ``MultiCanvas`` with three
layers (photo, mask overlay, strokes) and a toolbar:

- tools: **sketch pen** (the partial sketch, 1 = stroke), **mask +** and **mask -** brushes
  (regions forced into / out of the mask: the "mask revising" the official demo lacks,
  docs/method.md section 6); a brush-width slider (image pixels, one width per tool);
- **undo stroke**, **clear**, **preview mask** (runs only the mask estimator and overlays its
  prediction, so you can revise it before applying), **apply** (runs the model through an
  :class:`~sketchedit.editor.EditSession`; the result becomes the new photo, the strokes are
  cleared and the used mask is overlaid), **undo edit** / **redo edit**;
- **show mask** and **before** (compare with the photo before the last edit) toggles;
- **upload** your own photo, and **save** the current photo as PNG.

Photos are edited and saved at their full resolution, whatever their size: the editor's
``strategy="auto"`` runs the networks on a crop around the strokes at the model's working size
(:mod:`sketchedit.roi`), so a 12-megapixel upload is as quick to edit as a small one. Only the
*display* is scaled: the canvas shows a copy of the photo (and of the mask overlay) reduced to
the canvas's size, and the strokes are stored in image pixels.

What "apply" does with mask strokes:

- with sketch strokes: a new edit; mask strokes revise the *new* prediction
  (``used = clip(pred + add, 0, 1) * (1 - erase)``);
- with mask strokes only: a *revision of the last edit*: it is re-run on its own input with
  its own sketch and the last used mask revised by the strokes (a new undoable step).

Design for testing (after ipyannotations): every event handler is a plain method
(:meth:`SketchWidget.on_down`, :meth:`on_move`, :meth:`on_up`, :meth:`apply`, ...), the strokes
live in Python as polylines in *image* coordinates, and the widget rasterises them itself with
PIL (a canvas's pixels cannot be read back without a browser). Canvas coordinates map to image
coordinates in one place, :meth:`SketchWidget.canvas_to_image`.

ipywidgets and ipycanvas are imported here only, so ``import sketchedit`` stays free of the
notebook stack.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sketchedit.data.crops import limit_max_side
from sketchedit.editor import EditResult, EditSession, MaskRevision, SketchEditor, as_rgb

TOOLS = ("sketch", "add", "erase")

#: Default brush widths in image pixels. The sketch pen is 1 px because the networks were
#: trained on thin, 1-px edge maps (docs/method.md section 1); mask brushes are broad. [ours]
DEFAULT_WIDTHS = {"sketch": 1, "add": 12, "erase": 12}

#: Colours of the strokes as drawn on the canvas (the model never sees these).
STROKE_COLOURS = {
    "sketch": "rgb(255, 40, 40)",
    "add": "rgba(0, 200, 80, 0.55)",
    "erase": "rgba(60, 90, 255, 0.55)",
}
#: The narrowest a stroke is drawn *on screen*, in canvas pixels, whatever its width in image
#: pixels: a 1-px pen on a 4000-px photo shown 512 px wide would otherwise be 0.13 canvas px
#: wide, i.e. invisible. The model still gets the stroke at its own width. [ours]
MIN_SCREEN_WIDTH = 2.0
#: The mask overlay: this RGB at this opacity where the mask is 1.
OVERLAY_RGB = (255, 0, 200)
OVERLAY_ALPHA = 0.45


@dataclass
class Stroke:
    """One polyline drawn with one tool. ``points`` are (x, y) in image pixel coordinates
    (continuous: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``); ``width`` in image pixels."""

    tool: str
    width: float
    points: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"tool": self.tool, "width": self.width, "points": [list(p) for p in self.points]}


def rasterize_strokes(strokes: list[Stroke], size: tuple[int, int], tool: str) -> np.ndarray:
    """Draw the strokes of one tool into an ``(H, W)`` float32 array in ``{0, 1}``.

    ``size`` is the image's ``(W, H)``. Lines with round joints and round caps (PIL's
    ``joint="curve"`` plus a disc at each end); a 1-px pen gives the thin, connected
    lines the networks expect.
    """
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
    w_img, h_img = size
    canvas = Image.new("L", (w_img, h_img), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        if stroke.tool != tool or not stroke.points:
            continue
        # Continuous coordinates -> the index of the pixel that contains the point.
        pts = [
            (min(max(int(np.floor(x)), 0), w_img - 1), min(max(int(np.floor(y)), 0), h_img - 1))
            for x, y in stroke.points
        ]
        width = max(1, int(round(stroke.width)))
        if len(pts) > 1:
            draw.line(pts, fill=255, width=width, joint="curve")
        if width <= 2:
            draw.point([pts[0], pts[-1]], fill=255)
            if width == 2:
                for x, y in (pts[0], pts[-1]):
                    draw.rectangle([x, y, x + 1, y + 1], fill=255)
        else:
            r = (width - 1) / 2
            for x, y in (pts[0], pts[-1]):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return (np.asarray(canvas) > 0).astype(np.float32)


def _fit_display(size: tuple[int, int], display_size: int) -> tuple[float, int, int]:
    """Image (W, H) -> (display_scale, canvas_w, canvas_h) with the longest canvas side
    ``display_size`` and the image's aspect ratio."""
    w, h = size
    scale = display_size / max(w, h)
    return scale, max(1, round(w * scale)), max(1, round(h * scale))


def _display_size(size: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """The (W, H) an image-resolution layer is sent to the browser at: the canvas's size, or
    the image's own when it is smaller (the browser upscales; fewer bytes to encode)."""
    return size if size[0] <= canvas[0] and size[1] <= canvas[1] else canvas


def empty_prediction_note(peak: float) -> str:
    """The status line's explanation of a predicted mask that never reaches 0.5 (``peak`` is
    its maximum): the generator then has no region to redraw."""
    peak = np.floor(peak * 100) / 100  # rounded down: 0.4999 is not shown as 0.50
    return (
        f"The predicted mask is empty (max {peak:.2f}, not above 0.5): no region is redrawn. The "
        f"strokes may be too short for this model's scale: draw longer ones, or add the "
        f"region with mask +."
    )


def empty_mask_note(result: EditResult) -> str | None:
    """Why an edit redrew nothing, for the status line; None when its mask is not empty.

    The generator redraws the pixels where the mask is above 0.5 (the hard mask of
    :func:`sketchedit.inference.run_sketchedit`); when there are none, the photo comes back
    (almost) unchanged and the user needs to know why.
    """
    if not result.ran_model or result.hard_mask is None or result.hard_mask.any():
        return None
    if result.settings.get("mask") == "predicted":
        return empty_prediction_note(float(result.soft_mask.max()))
    return "The mask is empty after your revision: no region is redrawn; add to it with mask +."


class SketchWidget:
    """Interactive SketchEdit in a notebook. Display it as the last expression of a cell.

    Args:
        editor: a :class:`~sketchedit.editor.SketchEditor`.
        image: the photo (anything :func:`sketchedit.editor.as_rgb` takes).
        display_size: the canvas's longest side in canvas pixels (the canvas keeps the
            image's aspect; ``display_scale = canvas / image``).
        max_side: photos (the initial one and uploads) larger than this are downscaled before
            editing; None (the default) edits and saves every photo at its full resolution.
        feather, size_mode, strategy: passed to every edit (see :meth:`SketchEditor.edit`);
            ``strategy="auto"`` edits a crop around the strokes at the model's scale.

    Handlers take *canvas* coordinates, exactly what ipycanvas reports; tests and scripted
    demos call them directly (``w.on_down(x, y); w.on_move(...); w.on_up(...); w.apply()``).
    """

    def __init__(
        self,
        editor: SketchEditor,
        image,
        *,
        display_size: int = 512,
        max_side: int | None = None,
        feather: float = 0,
        size_mode: str = "pad",
        strategy: str = "auto",
    ):
        import ipywidgets as W
        from ipycanvas import MultiCanvas

        self.editor = editor
        self.display_size = int(display_size)
        self.max_side = max_side
        photo = limit_max_side(as_rgb(image), max_side)
        self.session = EditSession(
            editor, photo, feather=feather, size_mode=size_mode, strategy=strategy
        )

        self.strokes: list[Stroke] = []
        self.tool = "sketch"
        self.widths = dict(DEFAULT_WIDTHS)
        self.busy = False
        self.ignored_applies = 0  # clicks on apply that arrived while the model was running
        self.applied_strokes: list[Stroke] = []  # the strokes of the last apply
        self.photo_name = "photo.png"  # the uploaded file's name (the app names downloads)
        self._drawing: Stroke | None = None
        self._preview: tuple[np.ndarray, np.ndarray] | None = None  # (sketch, predicted mask)
        # The status text of the last successful apply (see apply(): duplicate clicks).
        self._result_status: str | None = None
        # id(photo) -> (photo, its RGBA display copy): the photos the canvas shows (current,
        # and the "before" one), reduced once each, not on every redraw.
        self._display_cache: dict[int, tuple[Image.Image, np.ndarray]] = {}

        self.display_scale, cw, ch = _fit_display(photo.size, self.display_size)
        self.canvas = MultiCanvas(3, width=cw, height=ch)
        # Shown at its own pixel size (narrower screens shrink it, keeping the aspect);
        # ipycanvas maps CSS pixels back to canvas pixels in the events it sends.
        self.canvas.layout = W.Layout(width=f"{cw}px", max_width="100%", height="auto")
        self.canvas.add_class("sketchedit-canvas")
        self.photo_layer, self.mask_layer, self.stroke_layer = (self.canvas[i] for i in range(3))
        self.canvas.on_mouse_down(self.on_down)
        self.canvas.on_mouse_move(self.on_move)
        self.canvas.on_mouse_up(self.on_up)
        self.canvas.on_mouse_out(self.on_out)
        self.canvas.on_touch_start(self.on_touch_start)
        self.canvas.on_touch_move(self.on_touch_move)
        self.canvas.on_touch_end(self.on_touch_end)
        self.canvas.on_touch_cancel(self.on_touch_end)
        self.canvas.on_client_ready(self.redraw)

        def button(label, tip, callback, css):
            b = W.Button(description=label, tooltip=tip, layout=W.Layout(width="auto"))
            b.on_click(lambda _b: callback())
            b.add_class(css)
            return b

        self.tool_buttons = W.ToggleButtons(
            options=[("sketch pen", "sketch"), ("mask +", "add"), ("mask -", "erase")],
            value="sketch",
            tooltips=["draw the partial sketch", "add to the mask", "erase from the mask"],
            style={"button_width": "auto"},
        )
        self.tool_buttons.observe(lambda ch: self.set_tool(ch["new"]), names="value")
        self.width_slider = W.IntSlider(
            value=self.widths["sketch"], min=1, max=48, description="width (px)"
        )
        self.width_slider.observe(lambda ch: self._set_width(ch["new"]), names="value")
        self.undo_stroke_button = button(
            "undo stroke", "remove the last stroke", self.undo_stroke, "sketchedit-undo-stroke"
        )
        self.clear_button = button("clear", "remove all strokes", self.clear, "sketchedit-clear")
        self.preview_button = button(
            "preview mask", "run the mask estimator only", self.preview_mask, "sketchedit-preview"
        )
        self.apply_button = button("apply", "run SketchEdit", self.apply, "sketchedit-apply")
        self.apply_button.button_style = "primary"
        self.undo_edit_button = button(
            "undo edit",
            "back to the photo before the last edit",
            self.undo_edit,
            "sketchedit-undo-edit",
        )
        self.redo_edit_button = button(
            "redo edit", "re-apply the undone edit", self.redo_edit, "sketchedit-redo-edit"
        )
        self.show_mask_toggle = W.ToggleButton(value=True, description="show mask")
        self.show_mask_toggle.observe(lambda _c: self._draw_overlay(), names="value")
        self.compare_toggle = W.ToggleButton(value=False, description="before")
        self.compare_toggle.observe(lambda _c: self._draw_photo(), names="value")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        self.upload.observe(self._on_upload, names="value")
        self.filename = W.Text(value="sketchedit_result.png", description="save as")
        self.overwrite_box = W.Checkbox(value=False, description="overwrite", indent=False)
        self.save_button = button(
            "save", "save the current photo as PNG", self.save, "sketchedit-save"
        )
        self.status = W.Label(value="")
        self.status.add_class("sketchedit-status")
        self.ui = W.VBox(
            [
                W.HBox([self.tool_buttons, self.width_slider]),
                W.HBox(
                    [
                        self.undo_stroke_button,
                        self.clear_button,
                        self.preview_button,
                        self.apply_button,
                        self.undo_edit_button,
                        self.redo_edit_button,
                        self.show_mask_toggle,
                        self.compare_toggle,
                    ]
                ),
                self.canvas,
                W.HBox([self.upload, self.filename, self.save_button, self.overwrite_box]),
                self.status,
            ]
        )
        self.redraw()
        self._set_status(
            f"Draw a partial sketch on the {photo.size[0]}x{photo.size[1]} photo, then apply."
        )

    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)

    # ---- coordinates -------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H) of the current photo."""
        return self.session.current.size

    def canvas_to_image(self, x: float, y: float) -> tuple[float, float]:
        """Canvas pixel coordinates (as ipycanvas reports them) -> image pixel coordinates.

        The only place the display scaling is undone. ipycanvas already corrects for CSS
        scaling of the element, so ``x`` is in the canvas's own pixel grid; the two axes get
        their own factor because the canvas size is rounded to whole pixels. Points are
        clamped inside the image.
        """
        w, h = self.image_size
        sx, sy = self.canvas.width / w, self.canvas.height / h
        xi = min(max(float(x) / sx, 0.0), w - 1e-3)
        yi = min(max(float(y) / sy, 0.0), h - 1e-3)
        return xi, yi

    def image_to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Inverse of :meth:`canvas_to_image` (without the clamping)."""
        w, h = self.image_size
        return float(x) * self.canvas.width / w, float(y) * self.canvas.height / h

    # ---- drawing handlers (mouse and touch) ----------------------------------------------
    def on_down(self, x: float, y: float) -> None:
        """Start a stroke with the current tool at canvas point (x, y)."""
        if self.busy:
            return
        self._drawing = Stroke(
            self.tool, float(self.widths[self.tool]), [self.canvas_to_image(x, y)]
        )
        self.strokes.append(self._drawing)
        self._draw_stroke(self._drawing)

    def on_move(self, x: float, y: float) -> None:
        """Extend the stroke being drawn (ignored when no button is down)."""
        if self._drawing is None:
            return
        point = self.canvas_to_image(x, y)
        if point == self._drawing.points[-1]:
            return
        previous = self._drawing.points[-1]
        self._drawing.points.append(point)
        self._draw_segment(self._drawing, previous, point)

    def on_up(self, x: float | None = None, y: float | None = None) -> None:
        """Finish the stroke (adding (x, y) when given); mask strokes update the overlay."""
        stroke = self._drawing
        if stroke is None:
            return
        if x is not None and y is not None:
            self.on_move(x, y)
        self._drawing = None
        if stroke.tool == "sketch":
            self._preview = None  # the previewed prediction was for another sketch
        self._draw_overlay()
        self._set_status(f"{len(self.strokes)} stroke(s); apply to run the model.")

    def on_out(self, x: float, y: float) -> None:
        """The pointer left the canvas: end the stroke there."""
        self.on_up(x, y)

    def on_touch_start(self, touches) -> None:
        """ipycanvas touch events carry a list of (x, y); one finger draws."""
        if touches:
            self.on_down(*touches[0])

    def on_touch_move(self, touches) -> None:
        if touches:
            self.on_move(*touches[0])

    def on_touch_end(self, touches) -> None:
        # touch_end lists the fingers still down (usually none): end at the last point.
        self.on_up()

    def drag(
        self, points, *, tool: str | None = None, width: float | None = None, coords: str = "image"
    ) -> None:
        """Script a stroke through the same handlers the mouse calls (press, moves, release).

        ``points`` are (x, y) in image pixels (``coords="image"``) or canvas pixels
        (``coords="canvas"``); ``tool``/``width`` switch the tool and its width first.
        """
        if coords not in ("image", "canvas"):
            raise ValueError(f"coords must be 'image' or 'canvas', got {coords!r}")
        if not points:
            raise ValueError("a stroke needs at least one point")
        if tool is not None:
            self.set_tool(tool)
        if width is not None:
            self.width_slider.value = int(width)
        pts = [self.image_to_canvas(*p) if coords == "image" else p for p in points]
        self.on_down(*pts[0])
        for p in pts[1:]:
            self.on_move(*p)
        self.on_up(*pts[-1])

    # ---- tools -------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
        self.tool = tool
        if self.tool_buttons.value != tool:
            self.tool_buttons.value = tool
        self.width_slider.value = int(self.widths[tool])

    def _set_width(self, width: int) -> None:
        self.widths[self.tool] = int(width)

    def undo_stroke(self) -> None:
        """Remove the last stroke."""
        if self.busy or not self.strokes:
            return
        removed = self.strokes.pop()
        if removed.tool == "sketch":
            self._preview = None
        self._draw_strokes()
        self._draw_overlay()

    def clear(self) -> None:
        """Remove all strokes."""
        if self.busy:
            return
        self.strokes.clear()
        self._drawing = None
        self._preview = None
        self._draw_strokes()
        self._draw_overlay()

    # ---- rasterised strokes at model resolution ------------------------------------------
    def sketch_array(self) -> np.ndarray:
        """``(H, W)`` float32 {0, 1}: the partial sketch at the photo's resolution."""
        return rasterize_strokes(self.strokes, self.image_size, "sketch")

    def add_array(self) -> np.ndarray:
        return rasterize_strokes(self.strokes, self.image_size, "add")

    def erase_array(self) -> np.ndarray:
        return rasterize_strokes(self.strokes, self.image_size, "erase")

    def _revision(self) -> MaskRevision | None:
        if not any(s.tool in ("add", "erase") for s in self.strokes):
            return None  # skip rasterising two empty full-resolution layers
        add, erase = self.add_array(), self.erase_array()
        if not add.any() and not erase.any():
            return None
        return MaskRevision(add=add, erase=erase)

    def displayed_mask(self) -> np.ndarray | None:
        """The mask the overlay shows: the mask the next apply would start from, revised by
        the mask strokes. ``None`` when there is nothing to show."""
        sketch = self.sketch_array()
        if sketch.any():
            base = self._preview[1] if self._preview_matches(sketch) else None
        else:
            last = self.session.last_result
            base = None if last is None else last.used_mask
        revision = self._revision()
        if base is None and revision is None:
            return None
        if base is None:
            base = np.zeros(self.image_size[::-1], np.float32)
        return base if revision is None else revision.apply(base)

    def _preview_matches(self, sketch: np.ndarray) -> bool:
        return self._preview is not None and np.array_equal(self._preview[0], sketch)

    # ---- running the model ---------------------------------------------------------------
    def preview_mask(self) -> np.ndarray | None:
        """Run only the mask estimator on the current sketch and overlay its prediction."""
        if self.busy:
            return None
        sketch = self.sketch_array()
        if not sketch.any():
            self._set_status("Nothing to preview: draw a sketch first.")
            return None
        predicted = self.editor.predict_mask(
            self.session.current,
            sketch,
            size_mode=self.session.size_mode,
            strategy=self.session.strategy,
        )
        self._preview = (sketch, predicted)
        self._draw_overlay()
        if predicted.max() > 0.5:
            self._set_status("Predicted mask shown; revise it with mask +/- and apply.")
        else:
            self._set_status(empty_prediction_note(float(predicted.max())))
        return predicted

    def apply(self) -> EditResult | None:
        """Run the model on the strokes; the result becomes the photo. Returns the result,
        or None when nothing was done (no strokes, or the model is already running)."""
        if self.busy:  # a second click while the model runs
            self.ignored_applies += 1
            return None
        sketch = self.sketch_array()
        revision = self._revision()
        if not sketch.any() and revision is None:
            if self._result_status is not None and self.status.value == self._result_status:
                # A second click on apply, sent before the button was disabled in the browser,
                # reaches the kernel only after the edit (the kernel handles one message at a
                # time): nothing is drawn since, so keep the result's message on screen.
                self.ignored_applies += 1
                return None
            self._set_status("Nothing to apply: draw a sketch (or revise the mask) first.")
            return None
        if not sketch.any() and self.session.last_result is None:
            self._set_status("Mask strokes revise an edit: draw a sketch first.")
            return None
        self.busy = True
        self.apply_button.disabled = True
        self._set_status("Running the model...")
        try:
            start = time.perf_counter()
            if sketch.any():
                result = self.session.edit(sketch, revision)
                what = "applied"
            else:
                result = self.session.revise(revision)
                what = "revised"
            self.applied_strokes = list(self.strokes)
            self.strokes.clear()
            self._preview = None
            self.redraw()
            self._set_status(self._result_message(result, what, time.perf_counter() - start))
            self._result_status = self.status.value
            return result
        except Exception as err:
            self._set_status(f"Edit failed: {type(err).__name__}: {err}")
            raise
        finally:
            self.busy = False
            self.apply_button.disabled = False

    def _result_message(self, result: EditResult, what: str, seconds: float) -> str:
        """The status line after an edit: what ran where, and an empty mask explained."""
        w, h = result.image.size
        text = (
            f"Edit {len(self.session.history)} {what} in {seconds:.2f} s on the {w}x{h} photo "
            f"({result.describe()}; the model works at {result.working_size} px); "
            f"mask covers {float(result.used_mask.mean()):.1%} of the photo."
        )
        note = empty_mask_note(result)
        return text if note is None else f"{text} {note}"

    def undo_edit(self) -> None:
        """Back to the photo before the last edit (the strokes on screen are kept)."""
        if self.busy or not self.session.can_undo:
            self._set_status("Nothing to undo." if not self.busy else self.status.value)
            return
        self.session.undo()
        self.redraw()
        self._set_status(f"Undone; {len(self.session.history)} edit(s) applied.")

    def redo_edit(self) -> None:
        """Re-apply the last undone edit."""
        if self.busy or not self.session.can_redo:
            self._set_status("Nothing to redo." if not self.busy else self.status.value)
            return
        self.session.redo()
        self.redraw()
        self._set_status(f"Redone; {len(self.session.history)} edit(s) applied.")

    # ---- photos in and out -----------------------------------------------------------------
    def load_image(self, image) -> None:
        """Start over on a new photo (history, strokes and mask are cleared)."""
        photo = limit_max_side(as_rgb(image), self.max_side)
        self.session.reset(photo)
        self._display_cache.clear()
        self.strokes.clear()
        self._drawing = None
        self._preview = None
        self.display_scale, cw, ch = _fit_display(photo.size, self.display_size)
        self.canvas.width, self.canvas.height = cw, ch
        self.canvas.layout.width = f"{cw}px"
        self.redraw()
        self._set_status(f"Loaded a {photo.size[0]}x{photo.size[1]} photo.")

    def load_image_bytes(self, data: bytes, name: str = "upload") -> bool:
        """Load an uploaded file's bytes. A file that is not an image gives a message in the
        status label (not an exception); returns whether it worked."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                photo = as_rgb(img)
        except Exception as err:  # PIL raises several types for bad files
            self._set_status(f"Could not read {name!r} as an image ({type(err).__name__}).")
            return False
        self.load_image(photo)
        self.photo_name = name
        self._set_status(f"Loaded {name!r} ({photo.size[0]}x{photo.size[1]}).")
        return True

    def _on_upload(self, change) -> None:
        items = change["new"] or ()
        for item in items:
            self.load_image_bytes(bytes(item["content"]), item.get("name", "upload"))
        if items:
            self.upload.value = ()  # so that uploading the same file again triggers a load

    def save(self, path: str | os.PathLike | None = None, overwrite: bool | None = None):
        """Save the current photo as PNG (atomically). Returns the path, or None.

        An existing file is not replaced unless ``overwrite`` (or the "overwrite" box) is
        set: the status label says so instead. [ours] A click must not silently destroy an
        earlier result.
        """
        path = Path(path if path is not None else self.filename.value).expanduser()
        overwrite = self.overwrite_box.value if overwrite is None else overwrite
        if path.suffix.lower() != ".png":
            self._set_status(f"Not saved: {path.name!r} must end in .png.")
            return None
        if (path.exists() or path.is_symlink()) and not overwrite:  # a dangling link too
            self._set_status(f"Not saved: {path} exists (tick 'overwrite' to replace it).")
            return None
        from sketchedit.fileio import atomic_write_bytes

        try:  # atomic; an existing file keeps its permissions (sketchedit.fileio)
            atomic_write_bytes(path, self.png_bytes())
        except OSError as err:
            self._set_status(f"Not saved: {err}")
            return None
        self._set_status(f"Saved {path}.")
        return path

    def png_bytes(self) -> bytes:
        """The current photo, at its full resolution, encoded as PNG."""
        buf = io.BytesIO()
        self.session.current.save(buf, format="PNG")
        return buf.getvalue()

    # ---- drawing on the canvas -----------------------------------------------------------
    def redraw(self, *_args) -> None:
        """Repaint all three layers (also called when a new browser view connects)."""
        from ipycanvas import hold_canvas

        with hold_canvas():
            self._draw_photo()
            self._draw_overlay()
            self._draw_strokes()
        self.undo_edit_button.disabled = not self.session.can_undo
        self.redo_edit_button.disabled = not self.session.can_redo

    def _put_scaled(self, layer, rgba: np.ndarray) -> None:
        """Draw a ``(h, w, 4)`` uint8 display copy (see :func:`_display_size`) over the whole
        canvas.

        The browser does any upscaling (ipycanvas's put_image_data honours the canvas
        transform), so a small photo is sent at its own size; a large one was reduced to the
        canvas's size before: never megapixels of PNG per redraw. RGBA, so ipycanvas sends a
        lossless PNG (3-channel arrays go as JPEG).
        """
        h, w = rgba.shape[:2]
        layer.save()
        layer.scale(self.canvas.width / w, self.canvas.height / h)
        layer.put_image_data(rgba, 0, 0)
        layer.restore()

    def _canvas_wh(self) -> tuple[int, int]:
        return int(self.canvas.width), int(self.canvas.height)

    def display_photo(self, photo: Image.Image) -> np.ndarray:
        """``(h, w, 4)`` uint8: ``photo`` as the canvas shows it, reduced to the canvas's size
        (cached per photo: a 12-megapixel photo is reduced once, not on every redraw)."""
        cached = self._display_cache.get(id(photo))
        if cached is not None and cached[0] is photo:
            return cached[1]
        size = _display_size(photo.size, self._canvas_wh())
        # reducing_gap: a fast integer box reduction first, then an antialiased resize.
        small = photo if size == photo.size else photo.resize(size, reducing_gap=3.0)
        rgba = np.asarray(small.convert("RGBA"))
        if len(self._display_cache) >= 4:  # the current and the "before" photo, and spares
            self._display_cache.clear()
        self._display_cache[id(photo)] = (photo, rgba)
        return rgba

    def _draw_photo(self) -> None:
        last = self.session.last_result
        before = self.compare_toggle.value and last is not None
        photo = last.input_image if before else self.session.current
        self.photo_layer.clear()
        self._put_scaled(self.photo_layer, self.display_photo(photo))

    def _draw_overlay(self) -> None:
        self.mask_layer.clear()
        mask = self.displayed_mask() if self.show_mask_toggle.value else None
        if mask is None or not mask.any():
            return
        alpha = Image.fromarray(np.round(mask * (255 * OVERLAY_ALPHA)).astype(np.uint8), "L")
        size = _display_size(alpha.size, self._canvas_wh())
        if size != alpha.size:  # the area average: a thin mask stays faintly visible
            alpha = alpha.resize(size, Image.Resampling.BOX)
        rgba = np.zeros((size[1], size[0], 4), np.uint8)
        rgba[..., :3] = OVERLAY_RGB
        rgba[..., 3] = np.asarray(alpha)
        self._put_scaled(self.mask_layer, rgba)

    def screen_width(self, stroke: Stroke) -> float:
        """The stroke's width on the canvas, in canvas pixels: its image width scaled to the
        display, but at least :data:`MIN_SCREEN_WIDTH` so that a thin pen stays visible."""
        return max(MIN_SCREEN_WIDTH, stroke.width * self.display_scale)

    def _style(self, stroke: Stroke) -> None:
        layer = self.stroke_layer
        layer.stroke_style = STROKE_COLOURS[stroke.tool]
        layer.fill_style = STROKE_COLOURS[stroke.tool]
        layer.line_width = self.screen_width(stroke)
        layer.line_cap = "round"
        layer.line_join = "round"

    def _draw_stroke(self, stroke: Stroke) -> None:
        from ipycanvas import hold_canvas

        pts = [self.image_to_canvas(x, y) for x, y in stroke.points]
        with hold_canvas():
            self._style(stroke)
            if len(pts) == 1:
                self.stroke_layer.fill_circle(pts[0][0], pts[0][1], self.screen_width(stroke) / 2)
            else:
                self.stroke_layer.stroke_lines(pts)

    def _draw_segment(self, stroke: Stroke, a, b) -> None:
        from ipycanvas import hold_canvas

        with hold_canvas():
            self._style(stroke)
            self.stroke_layer.stroke_line(*self.image_to_canvas(*a), *self.image_to_canvas(*b))

    def _draw_strokes(self) -> None:
        from ipycanvas import hold_canvas

        with hold_canvas():
            self.stroke_layer.clear()
            for stroke in self.strokes:
                self._draw_stroke(stroke)

    def _set_status(self, text: str) -> None:
        self.status.value = text

    # ---- introspection (tests, the browser test, debugging) ------------------------------
    def state(self) -> dict:
        """A JSON-able summary of the widget's state."""
        return {
            "image_size": list(self.image_size),
            "canvas_size": [self.canvas.width, self.canvas.height],
            "display_scale": self.display_scale,
            "tool": self.tool,
            "strokes": [s.to_dict() for s in self.strokes],
            "applied_strokes": [s.to_dict() for s in self.applied_strokes],
            "edits": len(self.session.history),
            "can_undo": self.session.can_undo,
            "can_redo": self.session.can_redo,
            "busy": self.busy,
            "ignored_applies": self.ignored_applies,
            "status": self.status.value,
        }
