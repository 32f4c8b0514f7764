"""The editing API: input conversion, the empty-sketch rule, user masks and revisions,
exactness outside the mask, determinism, sessions with undo/redo, loading checkpoints."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sketchedit.editor import (
    EditResult,
    EditSession,
    MaskRevision,
    SketchEditor,
    as_sketch,
    feather_mask,
)

H, W = 30, 37  # deliberately not multiples of 8, not square


@pytest.fixture
def photo(rng):
    arr = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    return Image.fromarray(arr, mode="RGB")


@pytest.fixture
def sketch():
    s = np.zeros((H, W), np.float32)
    s[12, 8:28] = 1.0  # a horizontal line
    s[12:20, 27] = 1.0  # and a vertical one
    return s


def test_any_size_gives_outputs_at_input_size(editor, photo, sketch):
    for size_mode in ("pad", "resize"):
        r = editor.edit(photo, sketch, size_mode=size_mode)
        assert r.image.size == (W, H) and r.image.mode == "RGB"
        assert r.coarse.size == (W, H) and r.fine.size == (W, H)
        assert r.soft_mask.shape == r.used_mask.shape == (H, W)
        assert np.isfinite(r.soft_mask).all()
        assert 0.0 <= r.soft_mask.min() and r.soft_mask.max() <= 1.0
        assert r.ran_model
        # With the predicted mask the blend mask is the prediction itself.
        np.testing.assert_array_equal(r.used_mask, r.soft_mask)


def test_matches_the_reference_inference(editor, photo, sketch):
    """The mask-free path is run_sketchedit's, blended on the 8-bit photo instead."""
    from sketchedit.images import to_pil, to_tensor
    from sketchedit.inference import run_sketchedit

    for size_mode in ("pad", "resize"):
        r = editor.edit(photo, sketch, size_mode=size_mode)
        ref = run_sketchedit(
            editor.mask_estimator,
            editor.generator,
            to_tensor(photo)[None],
            torch.from_numpy(sketch)[None, None],
            size_mode=size_mode,
        )
        np.testing.assert_allclose(r.soft_mask, ref.soft_mask[0, 0].numpy(), atol=1e-6)
        diff = np.abs(np.asarray(r.image, np.int16) - np.asarray(to_pil(ref.output[0]), np.int16))
        assert diff.max() <= 1  # float rounding only
        # The mask-only preview predicts exactly the same mask.
        np.testing.assert_allclose(
            editor.predict_mask(photo, sketch, size_mode=size_mode), r.soft_mask, atol=1e-6
        )


def test_greyscale_and_rgba_inputs(editor, photo, sketch):
    grey = photo.convert("L")
    r = editor.edit(grey, sketch)
    assert r.image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(r.input_image), np.asarray(grey.convert("RGB")))

    rgba = np.dstack([np.asarray(photo), np.full((H, W), 255, np.uint8)])
    rgba[:, :4, 3] = 0  # transparent left border: composited on white by load_rgb
    keep = np.ones((H, W), np.float32)
    keep[:, :6] = 0.0  # the user mask leaves that border alone
    r = editor.edit(rgba, sketch, mask=keep)
    out = np.asarray(r.image)
    assert (out[:, :4] == 255).all()
    np.testing.assert_array_equal(out[:, :6], np.asarray(r.input_image)[:, :6])


def test_tensor_image_matches_pil(editor, photo, sketch):
    from sketchedit.images import to_tensor

    a = editor.edit(photo, sketch)
    b = editor.edit(to_tensor(photo), torch.from_numpy(sketch)[None])
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        editor.edit(to_tensor(photo) * 200, sketch)


def test_empty_sketch_returns_input_without_running_model(editor, photo, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the model must not run for an empty sketch")

    import sketchedit.inference

    monkeypatch.setattr(sketchedit.inference, "run_sketchedit", boom)
    monkeypatch.setattr(editor.mask_estimator, "forward", boom)
    for empty in (np.zeros((H, W), np.uint8), Image.new("L", (W, H), 0)):
        r = editor.edit(photo, empty, mask=np.ones((H, W), np.float32))
        assert not r.ran_model
        assert np.asarray(r.image).tobytes() == np.asarray(photo).tobytes()
        assert not r.used_mask.any() and not r.soft_mask.any()
        assert np.isfinite(r.used_mask).all()
        assert r.coarse is None and r.fine is None


def test_mismatched_sizes_name_both(editor, photo):
    with pytest.raises(ValueError, match=r"(?s)38x30.*37x30"):
        editor.edit(photo, np.zeros((H, W + 1), np.float32))
    with pytest.raises(ValueError, match=r"(?s)37x31.*37x30"):
        editor.edit(photo, np.zeros((H, W), np.float32), mask=np.zeros((H + 1, W)))


def test_sketch_conventions(sketch):
    reference = sketch.astype(bool)
    as_uint8 = sketch.astype(np.uint8)
    variants = [
        reference,
        sketch,
        as_uint8,  # {0, 1}
        as_uint8 * 255,  # {0, 255}
        Image.fromarray(as_uint8 * 255, mode="L"),
        Image.fromarray(as_uint8 * 255, mode="L").convert("1"),
        torch.from_numpy(sketch)[None, None],
    ]
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = as_uint8 * 255  # strokes on a transparent layer (colour irrelevant)
    variants.append(Image.fromarray(rgba, mode="RGBA"))
    for v in variants:
        np.testing.assert_array_equal(as_sketch(v).astype(bool), reference)
    # Soft float strokes: > 0.5 counts.
    np.testing.assert_array_equal(as_sketch(np.array([[0.4, 0.6]])), [[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_sketch(sketch * 2)
    with pytest.raises(ValueError, match="single-channel"):
        as_sketch(np.zeros((H, W, 3)))


def test_dark_lines_on_white_are_rejected_with_a_hint(editor, photo):
    paper = Image.new("L", (W, H), 255)
    ImageDraw.Draw(paper).line([(5, 5), (30, 20)], fill=0)
    with pytest.raises(ValueError, match="invert"):
        editor.edit(photo, paper)


def test_user_mask_replaces_prediction_and_zero_means_untouched(editor, photo, sketch):
    mask = np.zeros((H, W), np.float32)
    mask[6:24, 4:32] = 1.0
    r = editor.edit(photo, sketch, mask=mask)
    np.testing.assert_array_equal(r.used_mask, mask)
    out, inp = np.asarray(r.image), np.asarray(photo)
    outside = mask == 0
    np.testing.assert_array_equal(out[outside], inp[outside])  # exactly, as uint8
    assert (out[~outside] != inp[~outside]).any()  # and the edit did something inside
    # The prediction is still reported, and differs from the user's mask.
    assert not np.array_equal(r.soft_mask, mask)


def test_mask_revision_adds_and_erases(editor, photo, sketch):
    add = np.zeros((H, W), bool)
    add[0:5, 0:5] = True
    erase = np.zeros((H, W), np.uint8)
    erase[10:15, 15:20] = 255
    r = editor.edit(photo, sketch, mask=MaskRevision(add=add, erase=erase))
    predicted = editor.predict_mask(photo, sketch)
    np.testing.assert_allclose(r.soft_mask, predicted, atol=1e-6)
    expected = np.clip(predicted + add, 0, 1) * (1 - erase / 255)
    np.testing.assert_allclose(r.used_mask, expected, atol=1e-6)
    assert (r.used_mask[0:5, 0:5] == 1).all()
    assert (r.used_mask[10:15, 15:20] == 0).all()
    np.testing.assert_array_equal(
        np.asarray(r.image)[10:15, 15:20], np.asarray(photo)[10:15, 15:20]
    )


def test_deterministic(editor, photo, sketch):
    a, b = editor.edit(photo, sketch), editor.edit(photo, sketch)
    assert np.asarray(a.image).tobytes() == np.asarray(b.image).tobytes()
    np.testing.assert_array_equal(a.soft_mask, b.soft_mask)


def test_feather_extends_mask_outwards_only(editor, photo, sketch):
    mask = np.zeros((H, W), np.float32)
    mask[10:20, 10:25] = 1.0
    feathered = feather_mask(mask, 2)
    assert (feathered >= mask).all()
    assert 0 < feathered[10, 8] < 1  # soft just outside
    assert feathered[0, 0] == 0 and feathered[29, 36] == 0  # untouched far away
    r = editor.edit(photo, sketch, mask=mask, feather=2)
    np.testing.assert_array_equal(r.used_mask, feathered)
    keep = r.used_mask == 0
    np.testing.assert_array_equal(np.asarray(r.image)[keep], np.asarray(photo)[keep])
    with pytest.raises(ValueError, match="feather"):
        editor.edit(photo, sketch, feather=-1)


def test_bad_arguments(editor, photo, sketch):
    with pytest.raises(ValueError, match="size_mode"):
        editor.edit(photo, sketch, size_mode="crop")
    with pytest.raises(TypeError, match="image"):
        editor.edit(12, sketch)


def test_result_helpers(editor, photo, sketch):
    import matplotlib

    matplotlib.use("Agg")
    r = editor.edit(photo, sketch)
    d = r.to_dict()
    assert {"image", "soft_mask", "used_mask", "coarse", "fine", "sketch"} <= set(d)
    assert isinstance(r, EditResult) and d["image"] is r.image
    fig = r.show()
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_session_undo_redo_and_revise(editor, photo, sketch):
    session = EditSession(editor, photo)
    assert not session.can_undo and not session.can_redo
    first = session.edit(sketch)
    assert session.current == first.image  # same pixels (a copy: see the next test)
    second_sketch = np.zeros((H, W), np.float32)
    second_sketch[20, 5:30] = 1
    second = session.edit(second_sketch)
    # The second edit ran on the first result.
    assert second.input_image.tobytes() == first.image.tobytes()
    assert len(session.history) == 2

    assert session.undo() == first.image and session.can_redo
    assert session.redo() == second.image and not session.can_redo
    session.undo()
    # A new edit clears the redo stack; an empty edit is not recorded.
    third = session.edit(second_sketch, mask=np.ones((H, W)))
    assert not session.can_redo and session.history == [first, third]
    session.edit(np.zeros((H, W)))
    assert session.history == [first, third]

    # Revision: same input and sketch, revised mask, a new undoable step.
    erase = np.zeros((H, W), np.float32)
    erase[:, :10] = 1
    revised = session.revise(MaskRevision(erase=erase))
    assert revised.input_image.tobytes() == third.input_image.tobytes()
    np.testing.assert_array_equal(revised.sketch, third.sketch)
    assert (revised.used_mask[:, :10] == 0).all() and (revised.used_mask[:, 10:] == 1).all()
    assert session.undo() == third.image
    session.undo()
    session.undo()
    assert session.current == session.original and not session.can_undo
    with pytest.raises(ValueError, match="undo"):
        session.undo()
    with pytest.raises(ValueError, match="revise"):
        EditSession(editor, photo).revise(np.ones((H, W)))


def test_drawing_on_the_current_photo_does_not_change_undo_or_redo(editor, photo, sketch):
    # Today's failure: `current` was the stored history image, so drawing on it in place
    # (PIL ImageDraw, or a result's image) rewrote what undo and redo give back.
    from PIL import ImageDraw

    session = EditSession(editor, photo)
    result = session.edit(sketch)
    stored = result.image.tobytes()
    ImageDraw.Draw(session.current).rectangle((0, 0, 10, 10), fill=(255, 0, 255))
    ImageDraw.Draw(result.image).rectangle((0, 0, 10, 10), fill=(0, 255, 0))
    assert session.current.tobytes() == stored
    original = session.undo().tobytes()
    ImageDraw.Draw(session.current).rectangle((0, 0, 10, 10), fill=(255, 0, 255))
    assert session.current.tobytes() == original == session.original.tobytes()
    assert session.redo().tobytes() == stored


def test_from_pretrained_missing_file_is_clear(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        SketchEditor.from_pretrained(missing)


def test_from_pretrained_round_trip(tmp_path, editor, photo, sketch):
    from sketchedit.checkpoints import save_checkpoint

    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, {"mask_estimator": editor.mask_estimator, "generator": editor.generator})
    loaded = SketchEditor.from_pretrained(path)
    a, b = editor.edit(photo, sketch), loaded.edit(photo, sketch)
    assert np.asarray(a.image).tobytes() == np.asarray(b.image).tobytes()
    # The editor remembers where its weights came from (error messages name it).
    assert loaded.source == str(path)
    assert "random init" in SketchEditor.random_init(cnum=4).source

    only_one = tmp_path / "one.safetensors"
    save_checkpoint(only_one, {"mask_estimator": editor.mask_estimator})
    with pytest.raises(ValueError, match="generator"):
        SketchEditor.from_pretrained(only_one)


def test_from_official_round_trip(tmp_path, editor, photo, sketch):
    """Official-layout .pth files (as the authors' code saves them) load into an editor."""
    m_path, g_path = tmp_path / "latest_net_M.pth", tmp_path / "latest_net_G.pth"
    torch.save(editor.mask_estimator.to_official(), m_path)
    torch.save(editor.generator.to_official(), g_path)
    loaded = SketchEditor.from_official(m_path, g_path)
    a, b = editor.edit(photo, sketch), loaded.edit(photo, sketch)
    assert np.asarray(a.image).tobytes() == np.asarray(b.image).tobytes()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        SketchEditor.from_official(tmp_path / "missing.pth", g_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(editor):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        SketchEditor(editor.mask_estimator, editor.generator, device="cuda")


def test_lazy_export():
    import sketchedit

    assert sketchedit.SketchEditor is SketchEditor
    assert sketchedit.EditSession is EditSession
