"""Data pipeline: REFER reader (tiny fixture built here), safe pickles, ShapeRefs determinism and expression semantics
(re-checked by an independent parser), transforms/tokenisers/loaders and every bad input of issue #3."""

import filecmp
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from ris_nb.core import special_token_ids
from ris_nb.presets import get_preset
from ris_nb.data import refer as R
from ris_nb.io import UnsafePickleError, safe_load_pickle
from ris_nb.data import shaperefs as S
from ris_nb.data import shaperefs_files as SF
from ris_nb.data import words as W
from ris_nb.data import transforms as T
from conftest import copy_data

# --------------------------------------------------------------------------------------------------------------------
# A tiny REFER-format dataset, built from scratch
# --------------------------------------------------------------------------------------------------------------------
H1, W1, H2, W2 = 20, 16, 24, 30
POLY_A = [2, 2, 9, 2, 9, 9, 2, 9]  # two overlapping squares of one object
POLY_B = [6, 6, 13, 6, 13, 14, 6, 14]
LONG = "the " + "very " * 30 + "long chair"


def _rle_mask():
    m = np.zeros((H1, W1), np.uint8)
    m[12:18, 3:7] = 1
    m[15, 10] = 1
    return m


def _uncompressed(m):
    "COCO uncompressed RLE: run lengths over the column-major flattening, starting with zeros."
    flat = m.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": list(m.shape), "counts": counts}


def _c_mask():
    m = np.zeros((H2, W2), np.uint8)
    m[3:10, 20:28] = 1
    return m


def _sent(i, raw, **kw):
    return dict(sent_id=i, raw=raw, sent=raw.lower(), tokens=raw.lower().split(), **kw)


def build_refer(root: Path, mutate=None, refs_bytes=None):
    "Write <root>/refcoco/{refs(unc).p,instances.json} and two images; `mutate(refs, inst)` edits before writing."
    img_dir = root / "images/mscoco/images/train2014"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H1, W1), dtype=np.uint8), mode="L").save(
        img_dir / "COCO_train2014_000000000001.png"
    )
    Image.fromarray(rng.integers(0, 255, (H2, W2, 4), dtype=np.uint8), mode="RGBA").save(
        img_dir / "COCO_train2014_000000000002.png"
    )
    comp = mask_utils.encode(np.asfortranarray(_c_mask()))
    inst = dict(
        images=[
            dict(id=1, file_name="COCO_train2014_000000000001.png", height=H1, width=W1),
            dict(id=2, file_name="COCO_train2014_000000000002.png", height=H2, width=W2),
        ],
        annotations=[
            dict(
                id=10,
                image_id=1,
                category_id=1,
                segmentation=[POLY_A, POLY_B],
                bbox=[2, 2, 11, 12],
                area=1.0,
                iscrowd=0,
            ),
            dict(
                id=11,
                image_id=1,
                category_id=2,
                segmentation=_uncompressed(_rle_mask()),
                bbox=[0, 0, 1, 1],
                area=1.0,
                iscrowd=0,
            ),
            dict(
                id=20,
                image_id=2,
                category_id=1,
                segmentation={"size": [H2, W2], "counts": comp["counts"].decode()},
                bbox=[0, 0, 1, 1],
                area=1.0,
                iscrowd=1,
            ),
            dict(
                id=21,
                image_id=2,
                category_id=2,
                segmentation=[[20, 15, 23, 15, 23, 18, 20, 18]],
                bbox=[20, 15, 3, 3],
                area=9.0,
                iscrowd=0,
            ),
            dict(
                id=22,
                image_id=2,
                category_id=2,
                segmentation=[[1, 1, 5, 1], [1, 1, 6, 1, 6, 6, 1, 6]],
                bbox=[1, 1, 5, 5],
                area=1.0,
                iscrowd=0,
            ),
        ],
        categories=[
            dict(id=1, name="person", supercategory="person"),
            dict(id=2, name="chair", supercategory="furniture"),
        ],
    )
    refs = [
        dict(
            ref_id=1,
            ann_id=10,
            image_id=1,
            category_id=1,
            split="train",
            sent_ids=[1, 2],
            file_name="x_1.jpg",
            sentences=[_sent(1, "the man on the left"), _sent(2, "Person in RED")],
        ),
        dict(
            ref_id=2,
            ann_id=11,
            image_id=1,
            category_id=2,
            split="val",
            sent_ids=[3],
            file_name="x_2.jpg",
            sentences=[_sent(3, "chair")],
        ),
        dict(
            ref_id=3,
            ann_id=20,
            image_id=2,
            category_id=1,
            split="testA",
            sent_ids=[4, 5],
            file_name="x_3.jpg",
            sentences=[_sent(4, "the café guy ünïcode"), _sent(5, LONG)],
        ),
        dict(
            ref_id=4,
            ann_id=21,
            image_id=2,
            category_id=2,
            split="testB",
            sent_ids=[6],
            file_name="x_4.jpg",
            sentences=[_sent(6, "empty chair")],
        ),
        dict(
            ref_id=5,
            ann_id=22,
            image_id=2,
            category_id=2,
            split="testAB",
            sent_ids=[7],
            file_name="x_5.jpg",
            sentences=[_sent(7, "small chair")],
        ),
    ]
    if mutate:
        mutate(refs, inst)
    d = root / "refcoco"
    d.mkdir(parents=True, exist_ok=True)
    (d / "refs(unc).p").write_bytes(refs_bytes if refs_bytes is not None else pickle.dumps(refs, protocol=2))
    (d / "instances.json").write_text(json.dumps(inst), encoding="utf-8")
    return root


@pytest.fixture
def refer_root(tmp_path):
    return build_refer(tmp_path / "data")


def test_reads_refer_exactly(refer_root):
    ref = R.Refer(refer_root, "refcoco", "unc")
    assert ref.splits == ["train", "val", "testA", "testB", "testAB"]
    assert len(ref.refs) == 5 and len(ref.sents) == 7 and ref.cats == {1: "person", 2: "chair"}
    assert [r["ref_id"] for r in ref.img_to_refs[2]] == [3, 4, 5] and ref.ann_to_ref[11]["ref_id"] == 2
    # exact split names: testA does not pick up testAB (the original API would)
    assert ref.ref_ids("testA") == [3] and ref.ref_ids("testAB") == [5]
    # polygons merged: binary, overlap kept
    m = ref.mask(10)

    def one(p):
        return mask_utils.decode(mask_utils.frPyObjects([p], H1, W1))[..., 0].astype(bool)

    a, b = one(POLY_A), one(POLY_B)
    assert (a & b).any() and m.dtype == bool and np.array_equal(m, a | b)
    assert m.sum() == a.sum() + b.sum() - (a & b).sum()
    # RLE uncompressed and compressed: exact
    assert np.array_equal(ref.mask(11), _rle_mask().astype(bool))
    assert np.array_equal(ref.mask(20), _c_mask().astype(bool))


def test_dataset_items(refer_root):
    ds = R.RefDataset(refer_root, "refcoco", "unc", "testA")
    assert len(ds) == 2
    it = ds[0]
    assert it["image"].shape == (H2, W2, 3) and it["image"].dtype == np.uint8  # RGBA converted
    assert it["sentence"] == "the café guy ünïcode" and it["orig_size"] == (H2, W2)  # raw, non-ASCII kept
    assert (it["ref_id"], it["sent_id"], it["ann_id"], it["image_id"], it["split"], it["expr_type"]) == (
        3,
        4,
        20,
        2,
        "testA",
        None,
    )
    assert np.array_equal(it["mask"], _c_mask().astype(bool))
    tr = R.RefDataset(refer_root, "refcoco", "unc", "train", text_field="sent")
    assert [tr[i]["sentence"] for i in range(2)] == ["the man on the left", "person in red"]
    assert tr[0]["image"].shape == (H1, W1, 3)  # greyscale converted
    cached = R.RefDataset(refer_root, "refcoco", "unc", "testA", cache=True)
    for _ in range(2):
        c = cached[0]
        assert (
            np.array_equal(c["mask"], it["mask"])
            and c["mask"].dtype == bool
            and np.array_equal(c["image"], it["image"])
        )
    small = R.RefDataset(refer_root, "refcoco", "unc", "testB")[0]["mask"]  # a 3×3 object
    assert small.shape == (H2, W2) and small.sum() == 9 and small[15:18, 20:23].all()


def test_malformed_polygons_skipped(refer_root):
    ref = R.Refer(refer_root, "refcoco", "unc")
    with pytest.warns(UserWarning, match="malformed polygon"):
        m = ref.mask(22)
    assert m.any() and not m[0].any()


def test_per_ref_deterministic(refer_root):
    ds = R.RefDataset(refer_root, "refcoco", "unc", "train", per_ref=True, seed=3)
    assert len(ds) == 1
    picks = [ds[(0, e)]["sent_id"] for e in range(40)]
    assert set(picks) == {1, 2}
    ds2 = R.RefDataset(refer_root, "refcoco", "unc", "train", per_ref=True, seed=3)
    ds2.set_epoch(7)
    assert ds2[0]["sent_id"] == picks[7]


def test_stats(refer_root):
    st = R.stats(R.Refer(refer_root, "refcoco", "unc"))
    assert st["train"]["refs"] == 1 and st["train"]["sentences"] == 2 and st["testA"]["images"] == 1
    assert st["train"]["length_hist"] == {3: 1, 5: 1}


# --------------------------------------------------------------------------------------------------------------------
# Safe pickles
# --------------------------------------------------------------------------------------------------------------------
class _Payload:
    target = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_refused(tmp_path):
    flag = tmp_path / "pwned"
    _Payload.target = str(flag)
    evil = pickle.dumps([{"ref_id": 1, "boom": _Payload()}], protocol=2)
    # sanity: a plain pickle.loads would run it (do not: we only check the opcode stream names os.system)
    assert b"system" in evil
    root = build_refer(tmp_path / "data", refs_bytes=evil)
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p.*(posix|os)\.system"):
        R.Refer(root, "refcoco", "unc")
    assert not flag.exists()
    for proto in (0, 4, 5):
        p = tmp_path / f"e{proto}.p"
        p.write_bytes(pickle.dumps({"x": _Payload()}, protocol=proto))
        with pytest.raises(UnsafePickleError):
            safe_load_pickle(p)
    assert not flag.exists()
    p = tmp_path / "cls.p"
    p.write_bytes(pickle.dumps([np.int64(3)]))
    with pytest.raises(UnsafePickleError, match="numpy"):
        safe_load_pickle(p)


def test_python2_pickle(tmp_path):
    p = tmp_path / "py2.p"
    # protocol 2, as written by Python 2: SHORT_BINSTRING keys/values, one with a Latin-1 byte
    p.write_bytes(b"\x80\x02]q\x00}q\x01(U\x03rawq\x02U\x05caf\xe9!q\x03U\x03utfq\x04U\x02\xc3\xa9q\x05ua.")
    assert safe_load_pickle(p) == [{"raw": "café!", "utf": "é"}]
    p.write_bytes(pickle.dumps([{"raw": "plain"}], protocol=2))
    assert safe_load_pickle(p) == [{"raw": "plain"}]
    p.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="py2.p"):
        safe_load_pickle(p)


def test_checksums(refer_root):
    ref = R.Refer(refer_root, "refcoco", "unc")
    assert set(ref.checksums) == {"refs(unc).p", "instances.json"}
    R.Refer(refer_root, "refcoco", "unc", checksums=ref.checksums)
    with pytest.raises(ValueError, match="SHA-256"):
        R.Refer(refer_root, "refcoco", "unc", checksums={"instances.json": "0" * 64})


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------
def test_missing_files(tmp_path, refer_root):
    with pytest.raises(FileNotFoundError, match="data root"):
        R.Refer(tmp_path / "nope", "refcoco", "unc")
    with pytest.raises(FileNotFoundError, match="refcocog.*folders under the root: images, refcoco"):
        R.Refer(refer_root, "refcocog", "umd")
    with pytest.raises(FileNotFoundError, match=r"refs\(google\)\.p.*refs files present: refs\(unc\)\.p"):
        R.Refer(refer_root, "refcoco", "google")
    (tmp_path / "sr" / "shaperefs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="ris_nb synth --out"):
        R.Refer(tmp_path / "sr", "shaperefs", "shaperefs")
    (refer_root / "refcoco" / "instances.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances.json"):
        R.Refer(refer_root, "refcoco", "unc")


def test_bad_images(refer_root):
    img = refer_root / "images/mscoco/images/train2014/COCO_train2014_000000000002.png"
    img.write_bytes(b"garbage")
    ds = R.RefDataset(refer_root, "refcoco", "unc", "testA")
    with pytest.raises(ValueError, match="cannot read image .*000000000002.png"):
        ds[0]
    img.unlink()
    with pytest.raises(FileNotFoundError, match="000000000002.png"):
        R.RefDataset(refer_root, "refcoco", "unc", "testA")
    R.RefDataset(refer_root, "refcoco", "unc", "train")  # other split unaffected
    with pytest.raises(FileNotFoundError, match="not found"):
        R.load_image(img)


def test_unknown_split(refer_root):
    with pytest.raises(ValueError, match="unknown split 'test'.*valid splits: train, val, testA, testB, testAB"):
        R.RefDataset(refer_root, "refcoco", "unc", "test")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda refs, inst: refs[1].update(ann_id=999), r"ref #1 \(ref_id 2\) field 'ann_id': annotation 999"),
        (lambda refs, inst: refs[2].update(image_id=77), r"ref #2 \(ref_id 3\) field 'image_id': image 77"),
        (lambda refs, inst: refs[0].pop("split"), r"ref #0 has no field 'split'"),
        (lambda refs, inst: refs[0]["sentences"][1].pop("raw"), r"ref #0 sentences\[1\] has no field 'raw'"),
        (lambda refs, inst: refs[3].update(ref_id="4"), r"ref #3 field 'ref_id' should be int"),
        (
            lambda refs, inst: inst["annotations"][0].pop("segmentation"),
            r"annotations\[0\] lacks field\(s\) segmentation",
        ),
        (lambda refs, inst: inst.pop("categories"), r"missing list 'categories'"),
    ],
)
def test_bad_structure(tmp_path, mutate, match):
    root = build_refer(tmp_path / "data", mutate=mutate)
    with pytest.raises(ValueError, match=match):
        R.Refer(root, "refcoco", "unc")


def test_refs_not_a_list(tmp_path):
    root = build_refer(tmp_path / "data", refs_bytes=pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p: expected a list of refs, got dict"):
        R.Refer(root, "refcoco", "unc")


def test_empty_sentences(tmp_path):
    def mutate(refs, inst):
        refs[0]["sentences"][1].update(raw="   ", sent="")
        refs[1]["sentences"][0].update(raw="", sent="")

    root = build_refer(tmp_path / "data", mutate=mutate)
    with pytest.warns(UserWarning, match=r"ref_id 1 has empty 'raw' sentence\(s\) \(no word\) sent_id \[2\]"):
        ds = R.RefDataset(root, "refcoco", "unc", "train")
    assert len(ds) == 1 and ds[0]["sent_id"] == 1
    with pytest.warns(UserWarning):
        assert len(R.RefDataset(root, "refcoco", "unc", "val")) == 0  # ref without sentences dropped
    with pytest.raises(ValueError, match="sent_id"):
        R.RefDataset(root, "refcoco", "unc", "train", on_empty="error")


def test_rle_size_mismatch(tmp_path):
    root = build_refer(
        tmp_path / "data", mutate=lambda refs, inst: inst["annotations"][2]["segmentation"].update(size=[5, 5])
    )
    with pytest.raises(ValueError, match=r"annotation 20 \(RLE size \[5, 5\] does not match the image size \[24, 30\]"):
        R.Refer(root, "refcoco", "unc")


# --------------------------------------------------------------------------------------------------------------------
# Transforms, tokenisers, loaders on the fixture (long + non-ASCII sentences, a 3×3 object)
# --------------------------------------------------------------------------------------------------------------------
def _cfg(root, **kw):
    cfg = get_preset("lavt_tiny").override(
        {
            "data.root": str(root),
            "data.dataset": "refcoco",
            "data.split_by": "unc",
            "data.per_ref": False,
            "train.batch_size": 2,
            "eval.batch_size": 2,
        }
    )
    return cfg.override(kw)


def test_loaders_on_fixture(refer_root, tmp_path):
    cfg = _cfg(refer_root, **{"data.image_size": 32})
    tok = T.build_tokenizer(cfg)
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == list(
        special_token_ids("word").values()
    )
    assert len(tok) == 5 + 7  # train words: the man on left person in red
    loaders = T.make_dataloaders(cfg, tok)
    assert list(loaders) == ["train", "val", "testA", "testB"]
    b = next(iter(loaders["testA"]))
    assert b.images.shape == (2, 3, 32, 32) and b.masks.shape == (2, 32, 32) and b.input_ids.shape == (2, 20)
    assert set(b.masks.unique().tolist()) <= {0.0, 1.0} and b.orig_masks[0].shape == (H2, W2)
    # truncated
    assert b.input_ids[1, -1].item() == special_token_ids("word")["sep"] and b.attention_mask[1].sum() == 20
    assert b.input_ids[0, 1].item() == tok.convert_tokens_to_ids("the")
    # café: unseen
    assert b.input_ids[0, 2].item() == special_token_ids("word")["unk"]
    assert b.meta["sentence"][0] == "the café guy ünïcode" and b.meta["orig_size"] == [(H2, W2), (H2, W2)]
    zb = next(iter(loaders["testB"]))
    assert 0 < zb.masks.sum() and zb.orig_masks[0].sum() == 9
    assert len(b.to("cpu")) == 2
    # tokenizer round trip
    tok.save_pretrained(tmp_path / "tok")
    assert (
        T.encode_text(T.load_tokenizer(tmp_path / "tok"), [LONG], 20)[0].tolist()
        == T.encode_text(tok, [LONG], 20)[0].tolist()
    )
    with pytest.raises(FileNotFoundError, match="bert-base-uncased.*never downloads"):
        T.build_tokenizer(cfg.override({"data.tokenizer": "bert-base-uncased"}))
    with pytest.raises(ValueError, match="unknown split 'testC'"):
        T.make_dataloaders(cfg, tok, splits=["testC"])


def test_image_transform():
    tf = T.image_transform(get_preset("sag_tiny").override({"data.image_size": 8}))
    x = tf(np.full((5, 7, 3), 255, np.uint8))
    assert x.shape == (3, 8, 8) and torch.allclose(x, torch.ones_like(x))  # 0.5/0.5: white -> 1
    y = T.image_transform(get_preset("lavt_tiny"))(Image.new("L", (10, 10), 0))
    assert y.shape == (3, 128, 128) and torch.allclose(
        y[:, 0, 0], -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])
    )
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    assert T.resize_mask(m, 8).sum() == 16 and T.resize_mask(m, 8)[:4, :4].all()
    with pytest.raises(ValueError, match="data.normalize"):
        T.ImageTransform(8, "foo")


def test_minilm_tokenizer():
    tok = T.build_tokenizer(get_preset("lavt_mini"))
    ids, att = T.encode_text(tok, ["the leftmost hexagon " * 10, "x"], 20)
    sp = special_token_ids("minilm")
    assert len(tok) == 30522 and ids[0, 0] == sp["cls"] and ids[0, -1] == sp["sep"] and ids[1, 3] == sp["pad"]


# --------------------------------------------------------------------------------------------------------------------
# ShapeRefs
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=S.LANGUAGES)
def shaperefs_root(shaperefs_data, request):
    return shaperefs_data(160, 5, 128, request.param)


def _tree(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_shaperefs_deterministic(tmp_path):
    a = SF.generate(tmp_path / "a", n_images=40, seed=11, verbose=False)
    SF.generate(tmp_path / "b", n_images=40, seed=11, verbose=False)
    SF.generate(tmp_path / "c", n_images=40, seed=12, verbose=False)
    files = _tree(tmp_path / "a")
    assert files == _tree(tmp_path / "b") and len(files) == 40 + 3 and a["images"] == 40
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert match == files and not mismatch and not errors
    assert not filecmp.cmp(tmp_path / "a" / "refs(shaperefs).p", tmp_path / "c" / "refs(shaperefs).p", shallow=False)
    # regenerating in place replaces atomically; no temp folders left behind
    SF.generate(tmp_path / "a", n_images=40, seed=11, verbose=False)
    assert filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)[0] == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_shaperefs_atomic(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = S.make_image

    def flaky(*a):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk full")
        return real(*a)

    monkeypatch.setattr(SF, "make_image", flaky)
    with pytest.raises(RuntimeError):
        SF.generate(tmp_path / "shaperefs", n_images=20, seed=0, verbose=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not a ShapeRefs folder"):
        SF.generate(tmp_path / "mine", 4, 0, verbose=False)
    assert (tmp_path / "mine" / "thesis.tex").exists()


# An independent checker: parse each sentence and evaluate it on the scene read back from instances.json.
_C = "(red|green|blue|yellow|purple|orange)"
_SH = "(circle|square|triangle|diamond|star|hexagon)"
_NP = rf"((?:(?:small|large) )?(?:{_C} )?(?:{_SH}|object))"


class Scene:
    def __init__(self, ref, image_id):
        self.objs = []
        for a in ref.img_to_anns[image_id]:
            m = ref.mask(a["id"])
            ys, xs = np.nonzero(m)
            self.objs.append(
                dict(
                    id=a["id"],
                    shape=ref.cats[a["category_id"]],
                    color=a["color"],
                    size=a["size"],
                    x=xs.mean(),
                    y=ys.mean(),
                )
            )

    def np(self, phrase):
        words = phrase.split()
        noun, mods = words[-1], words[:-1]
        out = []
        for o in self.objs:
            if noun != "object" and o["shape"] != noun:
                continue
            if all(w in (o["color"], o["size"]) for w in mods):
                out.append(o)
        return out


# The rich language, rewritten into the plain one: surface words back to their canonical word, then phrasings.
_CANONICAL_WORD = {w: c for c, ws in W.LEXICON.items() for w in ws} | {"an": "a"}
_REWRITES = [
    (r" in the (?:image|picture)$", ""),
    (r"^the only ", "the "),
    (r" that is not (\w+) in colour$", r" that is not \1"),
    (r"^the westernmost ", "the leftmost "),
    (r"^the easternmost ", "the rightmost "),
    (r"^the (?:uppermost|northernmost) ", "the topmost "),
    (r"^the (?:lowermost|southernmost) ", "the bottommost "),
    (r"^the (.+) on the far (left|right)$", r"the \1 furthest to the \2"),
    (r"^the (.+) at the very top$", r"the topmost \1"),
    (r"^the (.+) at the very bottom$", r"the bottommost \1"),
    (r"^the (.+) counting from the ", r"the \1 from the "),
    (r"^the (.+) that is (second|third) from the ", r"the \2 \1 from the "),
    (r"\b(?:on the left side of|on the left of|west of)\b", "left of"),
    (r"\b(?:on the right side of|on the right of|east of)\b", "right of"),
    (r"\b(?:over|higher than|north of)\b", "above"),
    (r"\b(?:beneath|underneath|lower than|south of)\b", "below"),
    (r"\bnearest (?!to )", "nearest to "),
    (r"\bnext to\b", "nearest to"),
    (r"\b(?:which is|sitting)\b", "that is"),
    # the appearance language: an attribute after the noun goes back in front of it
    (r"^the (.+) (?:that is|in|coloured) (red|green|blue|yellow|purple|orange)$", r"the \1 <\2>"),
    (r"^the (small |large )?(.+) <(\w+)>$", r"the \1\3 \2"),
    (r"^the (.+) that is (small|large)$", r"the \2 \1"),
]


def to_plain(sent: str) -> str:
    "A rich-language sentence in the plain language's words and phrasings (a plain sentence comes back unchanged)."
    sent = " ".join(_CANONICAL_WORD.get(w, w) for w in sent.split())
    for pattern, repl in _REWRITES:
        sent = re.sub(pattern, repl, sent)
    return sent


_RELS = "to the left of|left of|to the right of|right of|above|below|under"


def _beyond(o, b, rel):
    "Signed offset of object `o` from landmark `b` in the direction of `rel` (px)."
    return {
        "left": b["x"] - o["x"],
        "right": o["x"] - b["x"],
        "above": b["y"] - o["y"],
        "below": o["y"] - b["y"],
        "under": o["y"] - b["y"],
    }[rel.split()[-2] if rel.endswith(" of") else rel]


def evaluate(scene, sent):
    "The set of annotation ids the sentence (plain or rich) denotes (raises if it cannot parse)."
    sent = to_plain(sent)
    key = {"left": lambda o: o["x"], "right": lambda o: -o["x"], "top": lambda o: o["y"], "bottom": lambda o: -o["y"]}

    def ids(objs):
        return {o["id"] for o in objs}

    # a chain
    if m := re.fullmatch(rf"the {_NP} (?P<rel>{_RELS}) (?P<inner>the {_NP} that is (?:{_RELS}) the {_NP})", sent):
        _, inner = evaluate(scene, m["inner"].replace(" that is ", " ", 1))  # its landmark: "the b <rel> the c"
        if len(inner) != 1:
            return "chain", set()
        (y,) = [o for o in scene.objs if o["id"] in inner]
        return "chain", ids(o for o in scene.np(m[1]) if o["id"] != y["id"] and _beyond(o, y, m["rel"]) > S.REL_MARGIN)

    def extreme(objs, k):
        v = sorted(objs, key=key[k])
        return set() if len(v) < 2 or key[k](v[0]) == key[k](v[1]) else {v[0]["id"]}

    if m := re.fullmatch(rf"the (leftmost|rightmost|topmost|highest|bottommost|lowest) {_NP}", sent):
        k = {
            "leftmost": "left",
            "rightmost": "right",
            "topmost": "top",
            "highest": "top",
            "bottommost": "bottom",
            "lowest": "bottom",
        }[m[1]]
        return "location", extreme(scene.np(m[2]), k)
    if m := re.fullmatch(rf"the {_NP} furthest to the (left|right)", sent):
        return "location", extreme(scene.np(m[1]), m[4])
    if m := re.fullmatch(rf"the (second|third) {_NP} from the (left|right|top|bottom)", sent):
        v = sorted(scene.np(m[2]), key=key[m[5]])
        k = {"second": 1, "third": 2}[m[1]]
        return "ordinal", ({v[k]["id"]} if len(v) > k else set())
    if m := re.fullmatch(
        (
            rf"the {_NP} (to the left of|left of|to the right of|right of|above|below|under|closest to|nearest to) "
            rf"the {_NP}"
        ),
        sent,
    ):
        land = scene.np(m[5])
        if len(land) != 1:
            return "relation", set()
        b, cands = land[0], [o for o in scene.np(m[1]) if o["id"] != land[0]["id"]]
        rel = m[4]
        if rel in ("closest to", "nearest to"):
            d = sorted(cands, key=lambda o: np.hypot(o["x"] - b["x"], o["y"] - b["y"]))
            return "relation", {d[0]["id"]} if d else set()
        off = {
            "to the left of": lambda o: b["x"] - o["x"],
            "left of": lambda o: b["x"] - o["x"],
            "to the right of": lambda o: o["x"] - b["x"],
            "right of": lambda o: o["x"] - b["x"],
            "above": lambda o: b["y"] - o["y"],
            "below": lambda o: o["y"] - b["y"],
            "under": lambda o: o["y"] - b["y"],
        }[rel]
        return "relation", ids(o for o in cands if off(o) > S.REL_MARGIN)
    if m := re.fullmatch(rf"the {_SH} (?:that|which) is not (\w+)", sent):
        return "negation", ids(o for o in scene.objs if o["shape"] == m[1] and m[2] not in (o["color"], o["size"]))
    if m := re.fullmatch(rf"the {_C} object that is not a {_SH}", sent):
        return "negation", ids(o for o in scene.objs if o["color"] == m[1] and o["shape"] != m[2])
    if m := re.fullmatch(rf"the {_NP}", sent):
        return "attribute", ids(scene.np(m[1]))
    raise AssertionError(f"cannot parse {sent!r}")


def test_shaperefs_expressions_unique(shaperefs_root):
    ref = R.Refer(shaperefs_root, "shaperefs", "shaperefs")
    rich = json.loads((shaperefs_root / "shaperefs" / "meta.json").read_text()).get("language", "plain") == "rich"
    assert ref.splits == ["train", "val", "testA", "testB"]
    scenes, types, n = {}, set(), 0
    language = json.loads((shaperefs_root / "shaperefs" / "meta.json").read_text()).get("language", "plain")
    for r in ref.refs.values():
        distinct = (
            {s["sent"] for s in r["sentences"]} if language == "appearance" else {s["type"] for s in r["sentences"]}
        )
        assert 2 <= len(r["sentences"]) <= 3 and len(distinct) == len(r["sentences"])
        sc = scenes.setdefault(r["image_id"], Scene(ref, r["image_id"]))
        for s in r["sentences"]:
            assert (
                s["raw"].lower() == s["sent"] and s["tokens"] == s["sent"].split() and len(s["tokens"]) <= W.MAX_WORDS
            )
            assert ("rare" in s) == rich and (not rich or s["rare"] == bool(set(s["tokens"]) & W.RARE_WORDS))
            typ, den = evaluate(sc, s["sent"])
            assert typ == s["type"], (s["sent"], typ, s["type"])
            assert den == {r["ann_id"]}, (r["ref_id"], s["sent"], den, r["ann_id"])
            types.add(typ)
            n += 1
    assert (
        types == ({"attribute"} if language == "appearance" else set(S.RICH_EXPR_TYPES if rich else S.EXPR_TYPES))
        and n > 300
    )


def _words_of(templates) -> set[str]:
    "Every word of a list (or dict of lists) of templates, slots left out."
    ts = [t for v in templates.values() for t in v] if isinstance(templates, dict) else list(templates)
    return {w for t in ts for w in t.split() if not w.startswith("{")}


def test_appearance_language_has_no_position_order_relation_or_negation_word(shaperefs_data):
    """RefCOCO+'s rule: every appearance sentence names its referent by colour, size and shape only, and denotes it
    alone."""
    app = shaperefs_data(300, 3, 64, "appearance")
    other = (
        _words_of({k: v for k, v in W.RICH_TEMPLATES.items() if k != "np"})
        | _words_of(W.REL_PHRASES)
        | _words_of(W.CONNECTORS)
        | set(S._ORD)
        | {"left", "right", "top", "bottom", "not", "closest", "nearest"}
    )
    other -= _words_of(W.APPEARANCE_TEMPLATES) | {w for ws in W.LEXICON.values() for w in ws}
    assert {"leftmost", "above", "second", "not", "west", "nearest"} <= other
    ref = R.Refer(app, "shaperefs", "shaperefs")
    sents = [(r, s) for r in ref.refs.values() for s in r["sentences"]]
    assert len(sents) > 1000 and all(s["type"] == "attribute" for _, s in sents)
    assert not [s["sent"] for _, s in sents if set(s["tokens"]) & other]
    scenes = {}
    for r, s in sents:
        sc = scenes.setdefault(r["image_id"], Scene(ref, r["image_id"]))
        assert evaluate(sc, s["sent"]) == ("attribute", {r["ann_id"]}), (r["ref_id"], s["sent"])
    assert len({s["sent"] for _, s in sents}) > 300  # varied phrasings, not one template


def test_shaperefs_scenes_and_splits(shaperefs_root):
    ref = R.Refer(shaperefs_root, "shaperefs", "shaperefs")
    meta = json.loads((shaperefs_root / "shaperefs" / "meta.json").read_text())
    assert meta["n_images"] == 160 and meta["splits"]["train"]["images"] == 112
    assert {r["split"] for r in ref.refs.values() if ref.imgs[r["image_id"]]["split"] != r["split"]} == set()
    for a in ref.anns.values():
        pair = (a["color"], ref.cats[a["category_id"]])
        if ref.imgs[a["image_id"]]["split"] != "testB":
            assert pair not in S.HELD_OUT
    for r in ref.refs.values():
        if r["split"] == "testB":
            assert (ref.anns[r["ann_id"]]["color"], ref.cats[r["category_id"]]) in S.HELD_OUT
    # masks: visible pixels, disjoint, not tiny, matching area and bbox
    for img_id, anns in list(ref.img_to_anns.items())[:40]:
        ms = [ref.mask(a["id"]) for a in anns]
        assert 2 <= len(ms) <= 6 and max(sum(m.astype(int) for m in ms).ravel()) == 1
        for i, (a, m) in enumerate(zip(anns, ms)):
            assert m.sum() == a["area"] >= 0.7 * np.pi * 9**2 * 0.6
            for a2, m2 in zip(anns[i + 1 :], ms[i + 1 :]):  # same colour: never touching (4-neighbourhood)
                if a2["color"] == a["color"]:
                    grown = m.copy()
                    grown[1:] |= m[:-1]
                    grown[:-1] |= m[1:]
                    grown[:, 1:] |= m[:, :-1]
                    grown[:, :-1] |= m[:, 1:]
                    assert not (grown & m2).any()
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_shaperefs_loaders(shaperefs_root):
    cfg = get_preset("lavt_tiny").override({"data.root": str(shaperefs_root)})
    loaders = T.make_dataloaders(cfg)
    b = next(iter(loaders["train"]))
    assert b.images.shape == (8, 3, 128, 128) and b.masks.shape == (8, 128, 128) and b.orig_masks is None
    assert set(b.meta["expr_type"]) <= set(S.EXPR_TYPES) and set(b.meta["split"]) == {"train"}
    ds = loaders["train"].dataset
    assert len(ds) == len(ds.base.refs)  # per_ref: one item per ref
    weak = T.make_dataloaders(cfg.override({"data.weak": True, "data.per_ref": False}), splits=["train", "val"])
    bt, bv = next(iter(weak["train"])), next(iter(weak["val"]))
    assert bt.masks is None and bt.orig_masks is None and bv.masks is not None and len(bv.orig_masks) == len(bv)
    # masks line up with the pixels of the referred object (its colour, up to the noise)
    ref = ds.base.refer
    for img, m, ann_id in zip(T.denormalize(b.images), b.masks.bool(), b.meta["ann_id"]):
        mean = (img[:, m] * 255).mean(1)
        assert torch.allclose(mean, torch.tensor(S.COLORS[ref.anns[ann_id]["color"]], dtype=torch.float), atol=6), (
            mean,
            ann_id,
        )

    # resumable epochs: a fresh loader pinned to epoch 2 repeats epoch 2 exactly
    def run(loader, e):
        T.set_epoch(loader, e)
        return [(s, i) for bb in loader for s, i in zip(bb.meta["sent_id"], bb.meta["ref_id"])]

    l1 = loaders["train"]
    e2 = [run(l1, e) for e in range(3)][2]
    assert run(T.make_dataloaders(cfg, ds.tokenizer, splits=["train"])["train"], 2) == e2
    # DDP: the engine may pass its own sampler
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=0)
    dl = T.make_loader(ds, 4, sampler=sampler)
    assert sum(len(bb) for bb in dl) == len(sampler)


def test_relative_data_root_finds_images(refer_root, tmp_path, monkeypatch, shaperefs_data):
    "A relative root (as `make quickstart` passes: --data data/shaperefs) resolves images under it, both layouts."
    # data/shaperefs, as `make quickstart`
    copy_data(shaperefs_data(4, 0, 64) / "shaperefs", tmp_path / "data" / "shaperefs")
    monkeypatch.chdir(tmp_path)
    ref = R.Refer("data", "shaperefs", "shaperefs")  # images inside the dataset folder
    assert all(ref.image_path(i).is_file() for i in ref.imgs)
    monkeypatch.chdir(refer_root.parent)
    ref = R.Refer(refer_root.name, "refcoco", "unc")  # the COCO layout under the root
    assert all(ref.image_path(i).is_file() for i in ref.imgs)
