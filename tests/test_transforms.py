"""Tokenizer folders, text encoding and epochs of `ris_nb.data.transforms` at their edges (04_transforms teaches the
common path)."""

from __future__ import annotations

import json

import pytest

from ris_nb.core import special_token_ids
from ris_nb.data.transforms import (
    encode_text,
    load_tokenizer,
    make_dataloaders,
    save_tokenizer,
    set_epoch,
    tokenizer_fingerprint,
    word_tokenizer,
    build_tokenizer,
)
from ris_nb.presets import get_preset


def test_a_tokenizer_folder_with_code_is_refused(tmp_path):
    tok_dir = tmp_path / "tok"
    word_tokenizer(["the red circle"]).save_pretrained(tok_dir)
    assert load_tokenizer(tok_dir).tokenize("the red circle") == ["the", "red", "circle"]
    cfg_file = tok_dir / "tokenizer_config.json"
    cfg_file.write_text(
        json.dumps({**json.loads(cfg_file.read_text()), "auto_map": {"AutoTokenizer": ["x.Tok", None]}})
    )
    with pytest.raises(ValueError, match="'auto_map' entry"):
        load_tokenizer(tok_dir)


def test_save_tokenizer_replaces_whole_and_leaves_no_temporary_folder(tmp_path):
    tok = word_tokenizer(["the red circle", "the blue square"])
    save_tokenizer(tok, tmp_path / "tokenizer")
    save_tokenizer(tok, tmp_path / "tokenizer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]
    assert load_tokenizer(tmp_path / "tokenizer").get_vocab() == tok.get_vocab()


def test_a_saved_tokenizer_encodes_alike_and_keeps_its_fingerprint(tmp_path):
    tok = word_tokenizer(["the red circle", "the blue square"])
    tok.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    long = ["the red circle " * 20]
    assert encode_text(again, long, 20)[0].tolist() == encode_text(tok, long, 20)[0].tolist()
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(tok)
    # the same words in another order are another vocabulary
    assert tokenizer_fingerprint(word_tokenizer(["red circle", "circle"])) != tokenizer_fingerprint(
        word_tokenizer(["red red circle"])
    )


def test_missing_empty_or_cut_tokenizer_folders_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path / "empty")
    cut = tmp_path / "cut"
    word_tokenizer(["the red circle"]).save_pretrained(cut)
    (cut / "tokenizer.json").write_text((cut / "tokenizer.json").read_text()[:50])
    with pytest.raises(ValueError, match=f"{cut / 'tokenizer.json'}: not valid JSON"):
        load_tokenizer(cut)


def test_longest_padding_keeps_the_token_cap_and_refuses_an_unknown_mode():
    tok = word_tokenizer(["the red circle"])
    capped = encode_text(tok, ["the red circle " * 20], 20, "max_tokens")[0]
    assert encode_text(tok, ["the red circle " * 20], 20, "longest")[0].tolist() == capped.tolist()
    with pytest.raises(ValueError, match="data.pad_to"):
        encode_text(tok, ["circle"], 20, "batch")


def _epoch_ids(loader, epoch: int) -> list:
    set_epoch(loader, epoch)
    return [s for b in loader for s in b.meta["sent_id"]]


def test_epochs_are_a_function_of_seed_and_epoch_in_a_fresh_loader_too(shaperefs_data):
    cfg = get_preset("lavt_tiny").override({"data.root": str(shaperefs_data(40, 0))})
    first = make_dataloaders(cfg, splits=["train"])["train"]
    tok = first.dataset.tokenizer
    fresh = make_dataloaders(cfg, tok, splits=["train"])["train"]
    e0, e1 = _epoch_ids(first, 0), _epoch_ids(first, 1)
    assert _epoch_ids(fresh, 1) == e1 and e0 != e1


def test_make_dataloaders_names_a_bad_argument(shaperefs_data):
    cfg = get_preset("lavt_tiny").override({"data.root": str(shaperefs_data(40, 0))})
    with pytest.raises(TypeError, match=r"splits='val': expected a list of split names, e.g. \['val'\]"):
        make_dataloaders(cfg, splits="val")
    with pytest.raises(TypeError, match=r"cfg='lavt_tiny': expected a ris_nb Config, e.g. get_preset\('lavt_tiny'\)"):
        make_dataloaders("lavt_tiny")


def test_the_packaged_minilm_tokenizer_gives_berts_special_ids():
    tok = build_tokenizer(get_preset("lavt_mini"))
    ids = encode_text(tok, ["the leftmost hexagon"], 20)[0][0]
    assert ids[0].item() == special_token_ids("minilm")["cls"]
    assert len(tok) == 30522
    assert tok.convert_ids_to_tokens(ids[:7].tolist()) == ["[CLS]", "the", "left", "##most", "he", "##xa", "##gon"]
