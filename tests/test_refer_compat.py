"""ShapeRefs is a drop-in RefCOCO: one generated dataset read three ways (our `Refer`, `pycocotools.coco.COCO.annToMask`
and a minimal re-implementation of the classic REFER `getMask`) gives identical masks for every ref; `area`/`bbox` agree
with the rasterised masks; sentences carry the REFER fields; the image pixels agree with the masks. Then the layout
checker (`check_layout`, `ris_nb check-data`) on a fake data root with files missing."""

import json
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from PIL import Image

from ris_nb.data import layout
from ris_nb.data import refer as R
from ris_nb.io import safe_load_pickle
from ris_nb.data import shaperefs as S


@pytest.fixture(scope="module")
def sr_root(shaperefs_data):
    return shaperefs_data(80, 3)


@pytest.fixture(scope="module")
def instances(sr_root):
    return json.loads((sr_root / "shaperefs" / "instances.json").read_text())


def classic_get_mask(ann: dict, img: dict) -> tuple[np.ndarray, float]:
    """The classic REFER getMask, written from its description: a polygon list goes through frPyObjects, every polygon
    is decoded to its own layer, the layers are summed and cast to uint8; the area is the sum of the per-polygon
    areas."""
    seg = ann["segmentation"]
    rles = mask_utils.frPyObjects(seg, img["height"], img["width"]) if isinstance(seg[0], list) else seg
    layers = mask_utils.decode(rles)
    return np.sum(layers, axis=2).astype(np.uint8), float(np.sum(mask_utils.area(rles)))


def test_segmentations_are_coco_polygons(instances):
    assert instances["annotations"]
    for a in instances["annotations"]:
        seg = a["segmentation"]
        assert isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg), a["id"]
        for p in seg:
            assert len(p) >= 6 and len(p) % 2 == 0 and all(isinstance(v, float) for v in p)


def test_three_readers_identical(sr_root, instances):
    ours = R.Refer(sr_root, "shaperefs", "shaperefs")
    coco = COCO(str(sr_root / "shaperefs" / "instances.json"))
    assert len(ours.refs) > 100
    n_pieces = 0
    for ref in ours.refs.values():
        ann, img = ours.ref_to_ann[ref["ref_id"]], ours.imgs[ref["image_id"]]
        m = ours.mask(ann["id"]).astype(np.uint8)
        classic, classic_area = classic_get_mask(ann, img)
        np.testing.assert_array_equal(coco.annToMask(coco.anns[ann["id"]]), m, err_msg=f"COCO, ref {ref['ref_id']}")
        np.testing.assert_array_equal(classic, m, err_msg=f"getMask, ref {ref['ref_id']}")  # sum is 0/1: no overlaps
        assert classic_area == ann["area"] == m.sum() > 0
        n_pieces += len(ann["segmentation"]) > 1
    assert n_pieces > 0  # some referred objects are visible in several pieces


def test_area_and_bbox_match_rasterised_masks(sr_root, instances):
    coco = COCO(str(sr_root / "shaperefs" / "instances.json"))
    for a in instances["annotations"]:
        m = coco.annToMask(coco.anns[a["id"]])
        ys, xs = np.nonzero(m)
        assert a["area"] == m.sum()
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["bbox"] == mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m))).tolist()


def test_sentences_carry_refer_fields(sr_root):
    refs = safe_load_pickle(sr_root / "shaperefs" / "refs(shaperefs).p")
    seen = set()
    for r in refs:
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        for s in r["sentences"]:
            assert {"raw", "sent", "tokens", "sent_id"} <= set(s)
            assert isinstance(s["raw"], str) and isinstance(s["sent"], str) and isinstance(s["sent_id"], int)
            assert s["tokens"] == s["sent"].split() and all(isinstance(t, str) for t in s["tokens"])
            assert s["raw"].lower() == s["sent"] and s["sent_id"] not in seen
            seen.add(s["sent_id"])


def test_pixels_agree_with_masks(sr_root, instances):
    "Every mask pixel shows its object's colour (up to the noise, sigma 6); just outside a mask it almost never does."
    ref = R.Refer(sr_root, "shaperefs", "shaperefs")
    outside_hits = outside_total = 0
    for image_id, anns in ref.img_to_anns.items():
        img = np.asarray(Image.open(ref.image_path(image_id)).convert("RGB")).astype(np.int16)
        for a in anns:
            m, colour = ref.mask(a["id"]), np.array(S.COLORS[a["color"]])
            assert (np.abs(img[m] - colour).max(1) <= 36).all(), (image_id, a["id"])
            rim = m.copy()
            rim[1:] |= m[:-1]
            rim[:-1] |= m[1:]
            rim[:, 1:] |= m[:, :-1]
            rim[:, :-1] |= m[:, 1:]
            rim &= ~m
            outside_hits += int((np.abs(img[rim] - colour).max(1) <= 18).sum())
            outside_total += int(rim.sum())
    assert outside_hits < 0.01 * outside_total, (outside_hits, outside_total)


def test_rle_datasets_still_read(sr_root, instances, tmp_path):
    "A ShapeRefs written before polygons (compressed RLE per instance) reads to the same masks."
    ours = R.Refer(sr_root, "shaperefs", "shaperefs")
    old = dict(instances, annotations=[])
    for a in instances["annotations"]:
        rle = mask_utils.encode(np.asfortranarray(ours.mask(a["id"]).astype(np.uint8)))
        old["annotations"].append(dict(a, segmentation={"size": rle["size"], "counts": rle["counts"].decode("ascii")}))
    d = tmp_path / "shaperefs"
    d.mkdir()
    (d / "instances.json").write_text(json.dumps(old))
    (d / "refs(shaperefs).p").write_bytes((sr_root / "shaperefs" / "refs(shaperefs).p").read_bytes())
    legacy = R.Refer(tmp_path, "shaperefs", "shaperefs", image_root=sr_root / "shaperefs" / "images")
    for ann_id in list(ours.anns)[:50]:
        np.testing.assert_array_equal(legacy.mask(ann_id), ours.mask(ann_id))


# --------------------------------------------------------------------------------------------------------------------
# check_layout / `ris_nb check-data` on a fake data root with files missing
# --------------------------------------------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/ris_nb_layout_pwned",))


@pytest.fixture
def fake_root(sr_root, tmp_path):
    "ShapeRefs; RefCOCO (unc) built from ShapeRefs' files with 2 images missing; RefCOCOg with a tampered refs(umd).p."
    import pickle
    import shutil

    shutil.copytree(sr_root / "shaperefs", tmp_path / "shaperefs")
    (tmp_path / "refcoco").mkdir()
    shutil.copy(sr_root / "shaperefs" / "refs(shaperefs).p", tmp_path / "refcoco" / "refs(unc).p")
    shutil.copy(sr_root / "shaperefs" / "instances.json", tmp_path / "refcoco" / "instances.json")
    coco = tmp_path / "images" / "mscoco" / "images" / "train2014"
    shutil.copytree(sr_root / "shaperefs" / "images", coco)
    refs = safe_load_pickle(tmp_path / "refcoco" / "refs(unc).p")
    inst = json.loads((tmp_path / "refcoco" / "instances.json").read_text())
    names = {im["id"]: im["file_name"] for im in inst["images"]}
    gone = sorted({names[r["image_id"]] for r in refs})[:2]
    for f in gone:
        (coco / f).unlink()
    (tmp_path / "refcocog").mkdir()
    (tmp_path / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps([{"ref_id": 1, "x": _Evil()}], protocol=2))
    (tmp_path / "refcocog" / "instances.json").write_text("{not json")
    return tmp_path, gone


def test_check_layout_names_what_is_missing(fake_root):
    root, gone = fake_root
    by = {(r.dataset, r.split_by): r for r in layout.check_layout(root)}
    sr, unc, google = by[("shaperefs", "shaperefs")], by[("refcoco", "unc")], by[("refcoco", "google")]
    assert sr.ok and sr.required and "magnet_tiny" in sr.needed_by
    assert unc.required and "magnet_paper" in unc.needed_by and not unc.ok and not unc.missing
    assert (unc.images_missing, unc.missing_examples) == (2, gone)
    assert not google.required and google.missing == [str(root / "refcoco" / "refs(google).p")]
    assert by[("refcoco+", "unc")].missing == [
        str(root / "refcoco+" / "refs(unc).p"),
        str(root / "refcoco+" / "instances.json"),
    ]
    umd = by[("refcocog", "umd")]
    assert any("refusing to load global" in u for u in umd.unreadable) and any(
        "not valid JSON" in u for u in umd.unreadable
    )
    assert not os.path.exists("/tmp/ris_nb_layout_pwned")
    text = layout.format_layout(list(by.values()))
    assert "[MISSING] refcoco / unc" in text and gone[0] in text and "refs(google).p" in text


def test_check_data_cli_exit_codes(fake_root, capsys):
    from ris_nb.cli import main

    root, gone = fake_root
    assert main(["check-data", "--root", str(root), "--dataset", "shaperefs"]) == 0
    assert main(["check-data", "--root", str(root)]) == 2  # refcoco/unc lacks 2 images
    assert main(["check-data", "--root", str(root), "--preset", "magnet_paper"]) == 2
    out = capsys.readouterr()
    assert gone[0] in out.out and "refcoco/unc" in out.err
    coco = root / "images" / "mscoco" / "images" / "train2014"
    for f in gone:
        (coco / f).write_bytes(b"")  # present, but not images
    assert main(["check-data", "--root", str(root), "--preset", "magnet_paper"]) == 2
    assert f"cannot read image {coco / gone[0]}" in capsys.readouterr().out
    for f in gone:
        (coco / f).write_bytes((root / "shaperefs" / "images" / f).read_bytes())
    assert main(["check-data", "--root", str(root), "--preset", "magnet_paper"]) == 0
    # refcocog is optional: reported, not fatal
    assert main(["check-data", "--root", str(root)]) == 0
    assert main(["check-data", "--root", str(root), "--dataset", "refcocog", "--split-by", "umd"]) == 2
    assert main(["check-data", "--root", str(root / "nowhere")]) == 2
