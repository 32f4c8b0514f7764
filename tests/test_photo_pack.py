"""The photo pack, built from a tiny synthetic source tree (no Debian package needed)."""

import hashlib
import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from sketchedit.data import photo_pack as pp
from sketchedit.data.photos import (
    PHOTO_SPLITS,
    bundled_photos,
    default_photos,
    pack_photos,
    split_photos,
)


# --------------------------------------------------------------------------------------------
# A synthetic source tree
# --------------------------------------------------------------------------------------------
def fake_photo(seed: int, size=(800, 600)) -> Image.Image:
    """A photo-like image: a smooth random colour field plus sensor noise (many colours, no
    flat areas) whose difference hash is unrelated to that of another seed."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8))
    arr = np.asarray(field.resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    arr = arr + rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=90) if fmt in ("JPEG", "WEBP") else img.save(buf, fmt)
    return buf.getvalue()


def qres_bundle(files: dict[str, bytes]) -> bytes:
    """A Qt ``.rcc`` (format 3) with ``files`` (``"dir/name.ext"`` -> bytes), as Qt's rcc
    writes it: a root folder, one sub-folder level, uncompressed data (our own writer)."""
    folders: dict[str, list[str]] = {}
    for path in files:
        folder, _, name = path.rpartition("/")
        folders.setdefault(folder, []).append(name)
    names, name_offsets = b"", {}

    def name_offset(name: str) -> int:
        nonlocal names
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded_name = name.encode("utf-16-be")
            names += struct.pack(">HI", len(name), 0) + encoded_name
        return name_offsets[name]

    data, nodes = b"", []
    # node 0: root with len(folders) children starting at node 1
    nodes.append(struct.pack(">IHII", 0, 2, len(folders), 1) + b"\0" * 8)
    first_file = 1 + len(folders)
    for folder, children in folders.items():
        nodes.append(struct.pack(">IHII", name_offset(folder), 2, len(children), first_file))
        nodes[-1] += b"\0" * 8
        first_file += len(children)
    for folder, children in folders.items():
        for name in children:
            payload = files[f"{folder}/{name}"]
            nodes.append(struct.pack(">IHHHI", name_offset(name), 0, 0, 0, len(data)) + b"\0" * 8)
            data += struct.pack(">I", len(payload)) + payload
    tree = b"".join(nodes)
    header_size = 24
    tree_off, data_off = header_size, header_size + len(tree)
    names_off = data_off + len(data)
    header = b"qres" + struct.pack(">IIIII", 3, tree_off, data_off, names_off, 0)
    return header + tree + data + names


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: walls/beach.jpg
 walls/unused.png
Copyright: 2020 A Photographer
License: CC0-1.0
 The licence text goes here and mentions CC-BY-4.0, which is not the licence.

License: GPL-2+
 Text of the GPL.
"""


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """Sources: ``walls`` (apt: files, a DEP-5 copyright), ``bundle`` (apt: a fake .rcc),
    ``pipsrc`` (pip: files). Returns the folder holding them and the source table."""
    root = tmp_path / "src"
    walls = root / "walls"
    walls.mkdir(parents=True)
    fake_photo(1).save(walls / "beach.jpg", quality=92)
    fake_photo(1).resize((400, 300)).save(walls / "beach_small.png")  # a resized copy
    fake_photo(2, (700, 900)).save(walls / "forest.png")
    fake_photo(3, (1600, 1200)).save(walls / "mountain.jpg", quality=92)  # > 512 px
    fake_photo(4, (100, 100)).save(walls / "icon.png")  # too small
    Image.new("RGB", (400, 300), (200, 30, 30)).save(walls / "logo.png")  # one colour
    fake_photo(5).save(walls / "painting.jpg", quality=92)  # excluded by name
    (walls / "notes.txt").write_text("not an image")
    # a fake Qt bundle that we cannot parse: WebP chunks between other bytes (scan fallback)
    rcc = root / "rcc"
    rcc.mkdir()
    blob = (
        b"junk RIFF but not a webp"
        + encoded(fake_photo(6, (640, 480)), "WEBP")
        + b"\x00" * 17
        + encoded(fake_photo(7, (480, 640)), "WEBP")
        + b"tail"
    )
    (rcc / "animals.rcc").write_bytes(blob)
    (rcc / "paintings.rcc").write_bytes(encoded(fake_photo(8), "WEBP"))  # skipped bundle
    pip = root / "pip"
    pip.mkdir()
    fake_photo(9, (640, 427)).save(pip / "tent.jpg", quality=92)
    docs = tmp_path / "doc"
    (docs / "fake-walls").mkdir(parents=True)
    (docs / "fake-walls" / "copyright").write_text(COPYRIGHT)
    monkeypatch.setattr(pp, "DOC_ROOT", docs)
    sources = (
        pp.Source("walls", "fake-walls", "apt", "files", str(walls), ("*",)),
        pp.Source(
            "bundle", "fake-rcc", "apt", "rcc", str(rcc), ("*.rcc",), skip=("paintings.rcc",)
        ),
        pp.Source("pipsrc", "fake-pip", "pip", "files", str(pip), ("*.jpg",), licence="MIT"),
    )
    monkeypatch.setattr(pp, "SOURCES", sources)
    monkeypatch.setattr(pp, "EXCLUDED", {"walls/painting": "a painting, not a photograph"})
    return root


def build(tmp_path, **kw):
    return pp.build_pack(tmp_path / "cache" / "photos", log=None, **kw)


def manifest_of(folder):
    return json.loads((folder / pp.MANIFEST).read_text())


KEPT = {
    "walls/beach",
    "walls/forest",
    "walls/mountain",
    "bundle/animals/chunk24",
    "pipsrc/tent",
}


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------
def test_pack_keeps_photos_and_says_why_each_other_image_is_left_out(tree, tmp_path):
    folder = build(tmp_path)
    m = manifest_of(folder)
    keys = {p["key"] for p in m["photos"]}
    second_webp = next(k for k in keys if k.startswith("bundle/") and k != "bundle/animals/chunk24")
    assert keys == KEPT | {second_webp}
    why = {e["key"]: e["reason"] for e in m["excluded"]}
    assert why["walls/beach_small"] == "duplicate of walls/beach"  # the larger copy is kept
    assert why["walls/icon"].startswith("too small")
    assert why["walls/logo"].startswith("few colours")
    assert why["walls/painting"] == "a painting, not a photograph"
    assert set(why) == {"walls/beach_small", "walls/icon", "walls/logo", "walls/painting"}


def test_manifest_fields_sizes_and_licences(tree, tmp_path):
    folder = build(tmp_path)
    m = manifest_of(folder)
    assert m["version"] == pp.PACK_VERSION and m["max_side"] == 512
    by_key = {p["key"]: p for p in m["photos"]}
    for p in m["photos"]:
        data = (folder / p["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == p["sha256"]
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG" and img.size == (p["width"], p["height"])
        assert max(p["width"], p["height"]) <= 512
        assert p["split"] in PHOTO_SPLITS and p["group"]
    assert (by_key["walls/mountain"]["width"], by_key["walls/mountain"]["height"]) == (512, 384)
    assert by_key["walls/forest"]["height"] == 512  # 700x900 -> longest side 512
    assert (by_key["pipsrc/tent"]["width"], by_key["pipsrc/tent"]["height"]) == (512, 342)
    # licences: per file from the DEP-5 copyright (first line only), else its `Files: *`
    assert by_key["walls/beach"]["licence"] == "CC0-1.0"
    assert by_key["walls/forest"]["licence"] == "GPL-2+"
    assert by_key["pipsrc/tent"]["licence"] == "MIT"
    assert by_key["walls/beach"]["original"].endswith("walls/beach.jpg")
    assert by_key["bundle/animals/chunk24"]["original"].endswith(
        "animals.rcc:/animals/chunk24.webp"
    )


def test_no_apt_builds_from_pip_sources_only(tree, tmp_path):
    m = manifest_of(build(tmp_path, apt=False))
    assert {p["key"] for p in m["photos"]} == {"pipsrc/tent"}


def test_a_failed_build_leaves_the_previous_pack_and_no_temporary_folder(
    tree, tmp_path, monkeypatch
):
    folder = build(tmp_path)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def broken_dumps(*args, **kwargs):  # fails after every JPEG of the new pack is written
        raise OSError("disk full")

    monkeypatch.setattr(pp.json, "dumps", broken_dumps)
    with pytest.raises(OSError, match="disk full"):
        build(tmp_path, seed=1)
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["photos"]
    # and with no previous pack, a failed build leaves nothing at all
    other = tmp_path / "other" / "photos"
    with pytest.raises(OSError, match="disk full"):
        pp.build_pack(other, log=None)
    assert not other.exists() and list(other.parent.iterdir()) == []


def test_rebuild_replaces_the_pack(tree, tmp_path):
    folder = build(tmp_path)
    (folder / "stale.jpg").write_bytes(b"old")
    build(tmp_path)
    assert not (folder / "stale.jpg").exists() and (folder / pp.MANIFEST).is_file()


def test_no_photo_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pp, "SOURCES", (pp.Source("x", "x", "apt", "files", str(tmp_path)),))
    with pytest.raises(ValueError, match="no photographs found"):
        build(tmp_path)
    assert not (tmp_path / "cache" / "photos").exists()


def test_cli_build_and_info(tree, tmp_path, capsys):
    cache = tmp_path / "cli"
    assert pp.main(["build", "--cache", str(cache), "--no-apt"]) == 0
    capsys.readouterr()
    assert pp.main(["info", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "pipsrc" in out and "walls" not in out and "MiB" in out
    assert pp.main(["info", "--cache", str(tmp_path / "none")]) == 1


def test_contact_sheets_show_every_photo(tree, tmp_path):
    folder = build(tmp_path)
    n = len(manifest_of(folder)["photos"])
    sheets = pp.contact_sheets(tmp_path / "sheets", folder, per_side=2, thumb=40)
    assert len(sheets) == -(-n // 4)  # 4 thumbnails a sheet
    with Image.open(sheets[0]) as img:
        assert img.size == (80, 2 * (40 + 14))
    with pytest.raises(FileNotFoundError):
        pp.contact_sheets(tmp_path / "s2", tmp_path / "no-pack")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SKETCHEDIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pp.cache_dir() == tmp_path / "xdg" / "sketchedit" / "photos"
    monkeypatch.setenv("SKETCHEDIT_CACHE", str(tmp_path / "se"))
    assert pp.cache_dir() == tmp_path / "se" / "photos"
    assert pp.cache_dir(tmp_path / "given") == tmp_path / "given"


# --------------------------------------------------------------------------------------------
# Qt bundles, licences, filters, hashes
# --------------------------------------------------------------------------------------------
def test_rcc_tree_gives_names_and_only_uncompressed_webp_members():
    webp = encoded(fake_photo(1, (64, 48)), "WEBP")
    bundle = qres_bundle(
        {
            "erase/alpaca.webp": webp,
            "erase/main.qml": b"RIFF....WEBP but a text",
            "fish/a.webp": webp,
        }
    )
    files = pp.rcc_files(bundle)
    assert [f[0] for f in files] == ["/erase/alpaca.webp", "/erase/main.qml", "/fish/a.webp"]
    members = pp.webp_members(bundle)
    assert [m[0] for m in members] == ["/erase/alpaca.webp", "/fish/a.webp"]
    for _, offset, length in members:
        assert bundle[offset : offset + length] == webp
    with pytest.raises(ValueError, match="qres"):
        pp.rcc_files(b"not a bundle")


def test_riff_scan_finds_each_webp_chunk_once():
    a, b = encoded(fake_photo(1, (64, 48)), "WEBP"), encoded(fake_photo(2, (32, 32)), "WEBP")
    blob = (
        b"xxRIFF\x00\x00\x00\x00WAVE" + a + b"pad" + b + b"RIFF\xff\xff\xff\x7fWEBP"
    )  # last: too long
    assert list(pp.scan_webp(blob)) == [(14, len(a)), (14 + len(a) + 3, len(b))]


def test_wheel_source_reads_members_of_the_newest_downloaded_wheel(tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("SKETCHEDIT_CACHE", str(tmp_path))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    china = encoded(fake_photo(1), "JPEG")
    for version in ("1.0.0", "1.9.1"):
        with zipfile.ZipFile(wheels / f"scikit_learn-{version}-py3-none-any.whl", "w") as z:
            z.writestr("sklearn/__init__.py", "")
            z.writestr("sklearn/datasets/images/china.jpg", china if version == "1.9.1" else b"")
    src = pp.Source(
        "sk", "scikit-learn", "pip", "wheel", "cache:wheels", ("scikit_learn-*.whl",),
        licence="CC-BY-2.0", members=("sklearn/datasets/images/*.jpg",),
    )  # fmt: skip
    (cand,) = pp.candidates([src])
    assert cand.key == "sk/china" and cand.licence == "CC-BY-2.0"
    assert "1.9.1" in cand.origin and cand.read_bytes() == china
    calls = []
    monkeypatch.setattr("subprocess.run", lambda cmd, check: calls.append(cmd))
    pp.download_wheels()
    assert calls[0][-3:] == ["--dest", str(wheels), *pp.DOWNLOADED_WHEELS]


def test_debian_copyright_last_matching_stanza_wins():
    c = pp.DebianCopyright.parse(COPYRIGHT)
    assert c.licence_of("/usr/share/backgrounds/walls/beach.jpg") == "CC0-1.0"
    assert c.licence_of("/usr/share/somewhere/else/beach.webp") == "CC0-1.0"  # by file name
    assert c.licence_of("/usr/share/backgrounds/walls/forest.jpg") == "GPL-2+"
    assert pp.DebianCopyright([]).licence_of("/x.jpg") == "unknown"


def test_non_photo_reason():
    photo = fake_photo(1, (400, 300))
    assert pp.non_photo_reason(photo, photo) is None
    grey = photo.convert("L").convert("RGB")  # a grey photo has <= 256 colours: still a photo
    assert pp.non_photo_reason(grey, grey) is None
    flat = np.asarray(photo).copy()
    flat[:, :380] = (255, 255, 255)  # 95 % white
    flat_img = Image.fromarray(flat)
    assert pp.non_photo_reason(flat_img, flat_img).startswith("mostly flat")
    cutout = photo.convert("RGBA")
    cutout.putalpha(Image.new("L", photo.size, 0))
    assert pp.non_photo_reason(cutout, photo).startswith("transparent")


def test_difference_hash_matches_resized_copies_not_other_photos():
    a = fake_photo(1)
    h = pp.difference_hash(a)
    assert pp.hamming_matrix([h, pp.difference_hash(a.resize((200, 150)))])[0, 1] <= 2
    others = [pp.difference_hash(fake_photo(s)) for s in range(2, 12)]
    assert pp.hamming_matrix([h, *others])[0, 1:].min() > pp.DUPLICATE_BITS


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
def test_assign_splits_is_deterministic_stratified_and_keeps_groups_together():
    rng = np.random.default_rng(0)
    sources = ["a"] * 50 + ["b"] * 30 + ["c"] * 2
    groups = [f"{s}/{i // 2}" for i, s in enumerate(sources)]  # pairs share a group
    splits = pp.assign_splits(sources, groups, seed=0)
    order = rng.permutation(len(sources))
    shuffled = pp.assign_splits([sources[i] for i in order], [groups[i] for i in order], seed=0)
    assert [shuffled[list(order).index(i)] for i in range(len(sources))] == splits
    side = {}
    for g, s in zip(groups, splits, strict=True):
        assert side.setdefault(g, s) == s  # no group on two sides
    for src in ("a", "b"):
        got = {s for s, x in zip(splits, sources, strict=True) if x == src}
        assert got == set(PHOTO_SPLITS)  # every big source in every split
    assert {s for s, x in zip(splits, sources, strict=True) if x == "c"} == {"train"}
    assert pp.assign_splits(sources, groups, seed=1) != splits


def test_split_quota():
    assert pp.split_quota(1) == {"train": 1, "validation": 0, "test": 0}
    assert pp.split_quota(3) == {"train": 1, "validation": 1, "test": 1}
    assert pp.split_quota(100) == {"train": 80, "validation": 10, "test": 10}


def test_merge_groups_joins_near_hashes_only():
    h = [0, 0b111, (1 << 64) - 1]  # 3 bits apart; the third is far from both
    assert pp.merge_groups(["x", "y", "z"], h, max_bits=3) == ["x", "x", "z"]
    assert pp.merge_groups(["x", "y", "z"], h, max_bits=2) == ["x", "y", "z"]


def test_scene_group():
    assert pp.scene_group("aloeL") == pp.scene_group("aloeR") == "aloe"
    assert pp.scene_group("graf1") == pp.scene_group("graf3") == "graf"
    assert pp.scene_group("leuvenA") == "leuven" and pp.scene_group("home") == "home"


# --------------------------------------------------------------------------------------------
# Loading: pack_photos and default_photos
# --------------------------------------------------------------------------------------------
def test_pack_photos_by_split(tree, tmp_path):
    folder = build(tmp_path)
    m = manifest_of(folder)
    all_photos = pack_photos(cache=folder)
    assert {p.key for p in all_photos} == {e["key"] for e in m["photos"]}
    for split in PHOTO_SPLITS:
        want = {e["key"]: e["group"] for e in m["photos"] if e["split"] == split}
        got = pack_photos(split, cache=folder)
        assert {p.key: p.group for p in got} == want
        assert all(p.path.is_file() and p.path.is_relative_to(folder) for p in got)
    with pytest.raises(ValueError, match="split"):
        pack_photos("heldout", cache=folder)


def test_pack_photos_refuses_a_broken_pack(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="make photos"):
        pack_photos(cache=tmp_path / "nowhere")
    folder = build(tmp_path)
    m = manifest_of(folder)
    (folder / m["photos"][0]["file"]).unlink()
    with pytest.raises(FileNotFoundError, match="lacks 1"):
        pack_photos(cache=folder)
    m["photos"][0]["file"] = "../../outside.jpg"
    (folder / pp.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="outside"):
        pack_photos(cache=folder)
    (folder / pp.MANIFEST).write_text('{"version": 99}')
    with pytest.raises(ValueError, match="version"):
        pack_photos(cache=folder)


def test_default_photos_uses_the_pack_when_it_exists(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHEDIT_CACHE", str(tmp_path / "cache"))
    build(tmp_path)  # into $SKETCHEDIT_CACHE/photos
    for split in PHOTO_SPLITS:
        assert default_photos(split) == pack_photos(split)


def test_default_photos_falls_back_to_the_bundled_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHEDIT_CACHE", str(tmp_path / "empty"))
    train, heldout = split_photos(bundled_photos(), 0.2, seed=0)
    assert default_photos("train") == train  # exactly today's training photos
    val, test = default_photos("validation"), default_photos("test")
    assert sorted(p.key for p in val + test) == sorted(p.key for p in heldout)
    assert not {p.split_group for p in val} & {p.split_group for p in test}
    assert test  # every source with one held-out group keeps it for the test tables
    with pytest.raises(ValueError, match="split"):
        default_photos("heldout")


def test_default_photos_of_a_given_pool_ignore_the_pack(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHEDIT_CACHE", str(tmp_path / "cache"))
    build(tmp_path)
    pool = bundled_photos(sources=("skimage", "sporco"))
    train, heldout = split_photos(pool, 0.2, seed=0)
    assert default_photos("train", pool=pool) == train
    got = default_photos("validation", pool=pool) + default_photos("test", pool=pool)
    assert sorted(p.key for p in got) == sorted(p.key for p in heldout)
