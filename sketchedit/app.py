"""The sketching widget as a standalone web app, for people who do not write Python.

``make app`` serves ``app/sketchedit_app.ipynb`` with Voila on http://127.0.0.1:8866: a page
with the sketching widget (:class:`sketchedit.widget.SketchWidget`) and no code, where a user
uploads a photo, draws, applies and downloads the result at the photo's full resolution. The
notebook only calls :func:`build_app`; everything is here, so it is tested like the rest of
the package.

What the page adds to the widget:

- a **model** choice: the starter checkpoint bundled with the package, and, when configured,
  your own checkpoint (environment variable ``SKETCHEDIT_CHECKPOINT``) and the official
  SketchEdit checkpoints (``SKETCHEDIT_OFFICIAL_M`` and ``SKETCHEDIT_OFFICIAL_G``: the two
  ``.pth`` files of the authors' code, mask estimator and generator). Choices that are not
  configured are not offered; a note under the menu says how to add them;
- a **download result** button that sends the current photo, at its full resolution, to the
  browser as a PNG file;
- the widget's server-side "save" is hidden: on a web page the file belongs in the user's
  downloads, not on the server's disk.

``app/voila.json`` raises the websocket's message limit to 200 MB (Voila reads it when started
from ``app/``, as ``make app`` does): with tornado's default of 10 MB, uploading a 12-megapixel
PNG silently drops the connection.

The status line is the widget's: the photo's real size, how the model ran (the crop and the
working size) and, when the predicted mask is empty, why.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sketchedit.editor import SketchEditor

#: Environment variables that make more models available in the app.
CHECKPOINT_ENV = "SKETCHEDIT_CHECKPOINT"
OFFICIAL_ENV = ("SKETCHEDIT_OFFICIAL_M", "SKETCHEDIT_OFFICIAL_G")

#: The photo the app opens with: a bundled one, so the page is usable at once.
DEFAULT_PHOTO = "skimage/chelsea"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu: ``load()`` builds the editor (on first use only)."""

    key: str
    label: str
    load: Callable[[], SketchEditor]


def model_choices(environ: Mapping[str, str] | None = None) -> tuple[list[ModelChoice], str]:
    """The models the app offers, and a note on the ones that are not configured.

    Always the bundled starter; ``SKETCHEDIT_CHECKPOINT`` adds a checkpoint in this project's
    format, ``SKETCHEDIT_OFFICIAL_M`` plus ``SKETCHEDIT_OFFICIAL_G`` the official weights.
    A variable that names a missing file is reported in the note, not offered.
    """
    env = os.environ if environ is None else environ
    choices = [ModelChoice("starter", "starter (bundled, 64 px)", SketchEditor.from_pretrained)]
    notes = []
    checkpoint = env.get(CHECKPOINT_ENV)
    if checkpoint:
        if Path(checkpoint).is_file():
            choices.append(
                ModelChoice(
                    "checkpoint",
                    f"your checkpoint ({Path(checkpoint).name})",
                    lambda: SketchEditor.from_pretrained(checkpoint),
                )
            )
        else:
            notes.append(f"{CHECKPOINT_ENV}={checkpoint} is not a file.")
    m_path, g_path = (env.get(name) for name in OFFICIAL_ENV)
    if m_path and g_path:
        missing = [p for p in (m_path, g_path) if not Path(p).is_file()]
        if missing:
            notes.append(f"Official checkpoints not found: {', '.join(missing)}.")
        else:
            choices.append(
                ModelChoice(
                    "official",
                    "official SketchEdit (256 px)",
                    lambda: SketchEditor.from_official(m_path, g_path),
                )
            )
    else:
        notes.append(
            "Official SketchEdit checkpoints: not configured. Start the app with "
            f"{OFFICIAL_ENV[0]}=latest_net_M.pth {OFFICIAL_ENV[1]}=latest_net_G.pth "
            "(the authors' two files) to offer them."
        )
    return choices, " ".join(notes)


def download_name(photo_name: str) -> str:
    """``"holiday.jpg"`` -> ``"holiday_sketchedit.png"`` (the downloaded file's name)."""
    stem = Path(photo_name).stem or "photo"
    return f"{stem}_sketchedit.png"


#: Runs in the browser: the PNG (base64) becomes a Blob, and a click on a temporary link to it
#: makes the browser save it under ``name``. [ours] ipywidgets has no download widget; a Blob
#: rather than a data: URL because Chromium refuses data: downloads larger than a few MB, and
#: a 12-megapixel PNG is tens of MB.
_DOWNLOAD_JS = """
(function (png, name) {
  const bytes = Uint8Array.from(atob(png), c => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], {type: 'image/png'}));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
})(%s, %s);
"""


class SketchApp:
    """The app's page: model menu, the sketching widget and a download button.

    Args:
        image: the first photo (default: the bundled :data:`DEFAULT_PHOTO`).
        environ: where to read the model configuration (default: ``os.environ``).
        display_size: the canvas's longest side on screen, in canvas pixels.
    """

    def __init__(
        self, image=None, *, environ: Mapping[str, str] | None = None, display_size: int = 640
    ):
        import ipywidgets as W

        from sketchedit.widget import SketchWidget

        self.choices, note = model_choices(environ)
        self._editors: dict[str, SketchEditor] = {}
        if image is None:
            from sketchedit.data.photos import bundled_photos

            image = next(p for p in bundled_photos() if p.key == DEFAULT_PHOTO).load()
        self.widget = SketchWidget(self._editor("starter"), image, display_size=display_size)
        for hidden in (self.widget.filename, self.widget.save_button, self.widget.overwrite_box):
            hidden.layout.display = "none"

        self.model_menu = W.Dropdown(
            options=[(c.label, c.key) for c in self.choices],
            value="starter",
            description="model",
            disabled=len(self.choices) == 1,
            layout=W.Layout(width="auto"),
        )
        self.model_menu.observe(lambda ch: self.choose_model(ch["new"]), names="value")
        self.model_note = W.HTML(f"<small>{_escape(note)}</small>" if note else "")
        self.download_button = W.Button(
            description="download result",
            tooltip="the current photo at its full resolution, as PNG",
            icon="download",
            button_style="success",
        )
        self.download_button.add_class("sketchedit-download")
        self.download_button.on_click(lambda _b: self.download())
        # Where _DOWNLOAD_JS runs (a hidden output; each download replaces the last one).
        self.download_js = W.Output(layout=W.Layout(display="none"))
        self.ui = W.VBox(
            [
                W.HTML(
                    "<h2>SketchEdit</h2><p>Upload a photo, draw a few lines where it should "
                    "change with the <b>sketch pen</b>, press <b>apply</b>, then "
                    "<b>download result</b>. The <b>mask +</b> / <b>mask -</b> brushes "
                    "correct the region the model changes.</p>"
                ),
                W.HBox([self.model_menu, self.model_note]),
                self.widget.ui,
                W.HBox([self.download_button]),
                self.download_js,
            ]
        )

    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)

    def _editor(self, key: str) -> SketchEditor:
        if key not in self._editors:
            choice = next(c for c in self.choices if c.key == key)
            self._editors[key] = choice.load()
        return self._editors[key]

    def choose_model(self, key: str) -> bool:
        """Switch the model used by the next edits (the photo and its history are kept).
        A model that fails to load leaves the current one and says why in the status line."""
        label = next(c.label for c in self.choices if c.key == key)
        try:
            editor = self._editor(key)
        except Exception as err:  # a broken file: tell the user, keep working
            self.widget._set_status(f"Could not load the {label} model: {err}")
            return False
        self.widget.editor = self.widget.session.editor = editor
        self.widget._set_status(
            f"Model: {label}, working size {editor.working_size} px. Draw, then apply."
        )
        return True

    def download(self) -> bytes:
        """Send the current photo (full resolution, PNG) to the browser as a download.
        Returns the PNG bytes."""
        from IPython.display import Javascript, display

        data = self.widget.png_bytes()
        name = download_name(self.widget.photo_name)
        encoded = base64.b64encode(data).decode("ascii")
        with self.download_js:
            self.download_js.clear_output()
            display(Javascript(_DOWNLOAD_JS % (json.dumps(encoded), json.dumps(name))))
        w, h = self.widget.image_size
        self.widget._set_status(f"Downloaded {name} ({w}x{h} px, {len(data) / 1e6:.1f} MB).")
        return data


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def build_app(image=None, **kwargs) -> SketchApp:
    """The app's page (what ``app/sketchedit_app.ipynb`` displays); see :class:`SketchApp`."""
    return SketchApp(image, **kwargs)


__all__ = ["ModelChoice", "SketchApp", "build_app", "download_name", "model_choices"]
