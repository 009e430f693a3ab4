"""Teacher-output cache: cached runs equal live ones, a second run never calls the teacher, and a cache
built for another teacher, tokenizer, data, length or feature set is never served."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert
from safetensors.torch import load_file

from kdistill import api, cli
from kdistill.cache import build_cache, cache_spec, check_folder, find_cache
from kdistill.config import DataConfig, DistillConfig, build
from kdistill.data import load_task_data
from kdistill.distill.features import FeatureRequest, forward_features, prepare_for_capture
from kdistill.errors import KDistillError
from kdistill.models import load_classifier, load_tokenizer, probe
from kdistill.teachers import CachedTeacher
from kdistill.tokenized import make_loader, tokenize_splits

KD = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
FEATURES = [*KD, {"name": "hidden_mse"}, {"name": "attn_mse", "weight": 0.1}]


def _cfg(teacher: Path, out: Path, tiny_data: dict, fast_train: dict, losses: list, train: dict | None = None,
         **top) -> DistillConfig:
    return build(DistillConfig, {"teacher": str(teacher), "student": {"num_layers": 2}, "data": tiny_data,
                                 "train": {**fast_train, **(train or {})}, "losses": losses, "out": str(out), **top})


@pytest.fixture
def teacher_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts forward passes of the teacher object itself (the student, a deep copy, is not counted)."""
    calls = [0]
    real = api._teacher_model

    def counted(name: str):
        model = real(name)

        def hook(mod, args) -> None:
            if mod is model:
                calls[0] += 1

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(api, "_teacher_model", counted)
    return calls


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


def _assert_same_history(h1: list[dict], h2: list[dict]) -> None:
    assert len(h1) == len(h2) > 0
    for r1, r2 in zip(h1, h2, strict=True):
        assert (r1["epoch"], r1["step"], r1.get("validation")) == (r2["epoch"], r2["step"], r2.get("validation"))
        assert r1["layer_losses"].keys() == r2["layer_losses"].keys()
        for term, layers in r1["layer_losses"].items():
            assert layers == pytest.approx(r2["layer_losses"][term], rel=1e-5, abs=1e-7), term


class Stop(Exception):
    pass


@pytest.mark.parametrize("case", ["kd", "features"])
def test_cached_run_equals_the_live_run(case: str, tiny_teacher: Path, tmp_path: Path, tiny_data: dict,
                                        fast_train: dict, teacher_calls: list[int]) -> None:
    losses = KD if case == "kd" else FEATURES
    train = {"epochs": 2, "save_steps": 4, "eval_batch_size": 32}
    if case == "features":  # also: the length-grouped sampler, and a run interrupted and resumed mid-epoch
        train["group_by_length"] = True
    live = api.distill(_cfg(tiny_teacher, tmp_path / "live", tiny_data, fast_train, losses, train))
    assert teacher_calls[0] == 12  # 96 examples / batch 16 x 2 epochs
    teacher_calls[0] = 0
    cfg = _cfg(tiny_teacher, tmp_path / "cached", tiny_data, fast_train, losses, train, teacher_cache=True,
               teacher_cache_dtype="float32")
    if case == "features":
        def stop_at_9(d) -> None:
            if d.state.global_step == 9:
                raise Stop

        with pytest.raises(Stop):
            api.distill(cfg, callbacks=[stop_at_9])
        assert [p.name for p in (tmp_path / "cached" / "checkpoints").iterdir()] == ["step-0000008"]
    cached = api.distill(cfg)
    assert teacher_calls[0] == 3  # the one pass that built the cache (96 examples / 32); training never calls it
    info = cached["teacher_cache"]
    assert Path(info["folder"]).parent == tmp_path / "cached" / "teacher_cache"
    assert info["built"] is (case == "kd")  # the resumed run found the cache its first part built
    _assert_same_weights(tmp_path / "live", tmp_path / "cached", atol=1e-5)
    _assert_same_history(live["history"], cached["history"])
    man = json.loads((Path(info["folder"]) / "manifest.json").read_text())
    stored = {k: v for k, v in man["request"].items() if v}
    assert stored == ({} if case == "kd" else {"hidden": [2, 4], "attn_scores": [2, 4]})


def test_a_second_run_reuses_the_cache_and_other_data_gets_a_new_one(
        tiny_teacher: Path, tmp_path: Path, tiny_data: dict, fast_train: dict, teacher_calls: list[int]) -> None:
    root = tmp_path / "cache_root"
    first = api.distill(_cfg(tiny_teacher, tmp_path / "a", tiny_data, fast_train, FEATURES, teacher_cache=str(root)))
    assert first["teacher_cache"]["built"] and teacher_calls[0] > 0
    teacher_calls[0] = 0
    again = api.distill(_cfg(tiny_teacher, tmp_path / "b", tiny_data, fast_train, FEATURES, teacher_cache=str(root)))
    assert teacher_calls[0] == 0 and not again["teacher_cache"]["built"]
    _assert_same_weights(tmp_path / "a", tmp_path / "b", atol=0)  # fp16 features, read twice alike
    # logits-only KD is served by the feature cache (it stores logits too)
    kd = api.distill(_cfg(tiny_teacher, tmp_path / "c", tiny_data, fast_train, KD, teacher_cache=str(root)))
    assert teacher_calls[0] == 0 and kd["teacher_cache"]["folder"] == first["teacher_cache"]["folder"]
    assert [p.name for p in root.iterdir()] == [Path(first["teacher_cache"]["folder"]).name]
    # other data: a new fingerprint, built next to the old one
    fewer = {**tiny_data, "max_train_examples": 80}
    other = api.distill(_cfg(tiny_teacher, tmp_path / "d", fewer, fast_train, KD, teacher_cache=str(root)))
    assert other["teacher_cache"]["built"] and teacher_calls[0] > 0
    assert len(list(root.iterdir())) == 2
    # re-running a finished run with another cache root builds nothing: the run is only re-exported
    teacher_calls[0] = 0
    rerun = api.distill(_cfg(tiny_teacher, tmp_path / "d", fewer, fast_train, KD,
                             teacher_cache=str(tmp_path / "new_root")))
    assert teacher_calls[0] == 0 and not (tmp_path / "new_root").exists()
    assert rerun == json.loads((tmp_path / "d" / "metrics.json").read_text())  # the finished run's own record


@pytest.fixture(scope="module")
def prepared(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    teacher = load_classifier(str(tiny_teacher))
    request = FeatureRequest(hidden=frozenset({0, 2}), attn_scores=frozenset({1}), attn_probs=frozenset({4}))
    prepare_for_capture(teacher, probe(teacher), request, "teacher")
    tok = load_tokenizer(str(tiny_teacher))
    tok_dir = tmp_path_factory.mktemp("tok")
    data_cfg = DataConfig(task="sst2", max_train_examples=64, max_eval_examples=8, max_length=32)
    data = load_task_data(data_cfg)
    train = tokenize_splits(data, tok, 32, str(tok_dir))["train"]
    spec = cache_spec(teacher, tok, data.splits["train"], train, 32, request, "float32")
    root = tmp_path_factory.mktemp("root")
    build_cache(root / spec.fingerprint, spec, teacher, train, tok, batch_size=16, progress=False, log=lambda m: None)
    return {"teacher": teacher, "tok": tok, "data": data, "train": train, "spec": spec, "root": root,
            "request": request, "tok_dir": tok_dir}


def test_cached_features_equal_the_live_teacher_on_a_padded_batch(prepared: dict) -> None:
    p = prepared
    source = CachedTeacher(p["root"] / p["spec"].fingerprint, p["request"])
    loader = make_loader(p["train"].add_column("idx", list(range(len(p["train"])))), p["tok"], 8, shuffle=True,
                         seed=0)
    batch = next(iter(loader))
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # padding is there to be handled
    cached = source.signals(batch)
    with torch.inference_mode():
        live = forward_features(p["teacher"], batch, p["request"])
    torch.testing.assert_close(cached.logits, live.logits, rtol=0, atol=1e-5)
    assert cached.mask is mask
    tok = mask.bool()
    pairs = tok[:, None, :, None] & tok[:, None, None, :]
    for kind in ("hidden", "attn_scores", "attn_probs"):
        c, l_ = getattr(cached, kind), getattr(live, kind)
        assert c.keys() == l_.keys() and c
        for layer in c:
            assert c[layer].shape == l_[layer].shape
            m = tok if kind == "hidden" else pairs.expand_as(c[layer])
            torch.testing.assert_close(c[layer][m], l_[layer][m], rtol=0, atol=1e-5)


def test_every_input_is_in_the_fingerprint(prepared: dict, tmp_path: Path) -> None:
    p = prepared
    base, root, teacher, tok, data = p["spec"], p["root"], p["teacher"], p["tok"], p["data"]
    assert find_cache(root, base) == root / base.fingerprint
    assert find_cache(root, cache_spec(teacher, tok, data.splits["train"], p["train"], 32, FeatureRequest(),
                                       "float16")) == root / base.fingerprint  # a subset is served

    heavier = copy.deepcopy(teacher)
    with torch.no_grad():
        heavier.classifier.weight[0, 0] += 1e-3
    other_tok_dir = make_tiny_bert(tmp_path / "other", num_layers=4)
    (other_tok_dir / "vocab.txt").write_text("\n".join((other_tok_dir / "vocab.txt").read_text().splitlines()[:-50]))
    (other_tok_dir / "tokenizer.json").unlink()
    other_tok = load_tokenizer(str(other_tok_dir))
    fewer = load_task_data(DataConfig(task="sst2", max_train_examples=48, max_eval_examples=8, max_length=32))

    def spec(model=teacher, tokenizer=tok, d=data, length=32, request=p["request"], dtype="float32"):
        train = tokenize_splits(d, tokenizer, length, str(p["tok_dir"]))["train"]
        return cache_spec(model, tokenizer, d.splits["train"], train, length, request, dtype)

    variants = {
        "teacher weights": spec(model=heavier),
        "tokenizer": spec(tokenizer=other_tok),
        "training data": spec(d=fewer),
        "max_length": spec(length=16),
        "features (lacks attn_scores[2])": spec(request=FeatureRequest(attn_scores=frozenset({1, 2}))),
    }
    for what, s in variants.items():
        assert s.fingerprint != base.fingerprint, what
        assert find_cache(root, s, log=lambda m: None) is None, what
        with pytest.raises(KDistillError, match="was built for another run") as err:
            check_folder(root / base.fingerprint, s)
        assert what in str(err.value), (what, str(err.value))
    assert spec(dtype="float16").fingerprint != base.fingerprint  # float32 features serve a float16 request
    assert find_cache(root, spec(dtype="float16")) == root / base.fingerprint


def test_a_damaged_cache_is_detected(prepared: dict, tmp_path: Path) -> None:
    import shutil

    p = prepared
    folder = tmp_path / p["spec"].fingerprint
    shutil.copytree(p["root"] / p["spec"].fingerprint, folder)
    check_folder(folder, p["spec"])  # the copy is sound and matches
    manifest = folder / "manifest.json"
    good = manifest.read_text()
    man = json.loads(good)
    man["parts"]["max_length"] = 64  # a hand edit that would make the cache look like another run's
    manifest.write_text(json.dumps(man))
    logs: list[str] = []
    assert find_cache(tmp_path, p["spec"], log=logs.append) is None
    assert any("damaged" in m and "does not hash" in m for m in logs), logs
    with pytest.raises(KDistillError, match="is damaged"):
        check_folder(folder, p["spec"])
    manifest.write_text(good)
    shard = next(folder.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(KDistillError, match="truncated"):
        check_folder(folder, p["spec"])


def test_pointing_at_another_runs_cache_is_one_line_exit_2(prepared: dict, tiny_teacher: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    # prepared's cache: 64 examples at max_length 32; this run: 96 examples at max_length 24
    folder = prepared["root"] / prepared["spec"].fingerprint
    code = cli.main(["distill", "--teacher", str(tiny_teacher), "--max_train_examples", "96", "--max_length", "24",
                     "--losses", "[{name: kl}]", "--teacher_cache", str(folder), "--out", str(tmp_path / "s"),
                     "--progress", "false", "--device", "cpu", "--data.cache_dir", str(prepared["tok_dir"])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"kdistill: error: teacher_cache {folder} was built for another run"), err
    assert "training data" in err and "max_length" in err, err
    assert "teacher weights" not in err and "teacher config" not in err and "tokenizer" not in err, err
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_cache_flags() -> None:
    parse = cli.build_parser().parse_args
    assert cli.config_from_args("distill", parse(["distill", "--teacher_cache"])).teacher_cache is True
    assert cli.config_from_args("distill", parse(["distill", "--teacher-cache", "runs/tc"])).teacher_cache == "runs/tc"
    assert cli.config_from_args("distill", parse(["distill"])).teacher_cache is False
    with pytest.raises(KDistillError, match="teacher_cache_dtype"):
        cli.config_from_args("distill", parse(["distill", "--teacher_cache_dtype", "int8"]))
