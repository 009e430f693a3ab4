"""Size and speed measurements on tiny, locally built models (no downloads)."""

from __future__ import annotations

import io

import pytest
import torch
import transformers
from rich.console import Console

from kdistill.errors import KDistillError
from kdistill.speed import (
    SpeedResult,
    Speedup,
    comparison_table,
    count_parameters,
    flops_per_example,
    measure_speed,
    measure_speeds,
    print_comparison,
    size_on_disk,
    speed_table,
)
from kdistill.timing import (
    ShapeTiming,
    assess_speedup,
    percentile,
    speedup_of,
    time_interleaved,
    time_shape,
)


def _config(layers: int = 2, hidden: int = 32, inter: int = 64, **kw) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=inter, max_position_embeddings=256, **kw,
    )


def _classifier(layers: int = 2, hidden: int = 32, inter: int = 64) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(_config(layers, hidden, inter))


def test_count_parameters_counts_tied_weights_once() -> None:
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(_config(tie_word_embeddings=True))
    emb = model.bert.embeddings.word_embeddings.weight
    decoder = model.cls.predictions.decoder
    assert decoder.weight.data_ptr() == emb.data_ptr()  # really tied
    h, v, i, pos = 32, 100, 64, 256
    embeddings = v * h + pos * h + 2 * h + 2 * h  # word, position, token type, LayerNorm
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    mlm_head = (h * h + h) + 2 * h + v  # transform dense, LayerNorm, output bias; decoder weight is tied
    assert count_parameters(model) == embeddings + 2 * layer + mlm_head == 29828
    with_dupes = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert count_parameters(model) == with_dupes - decoder.weight.numel() - decoder.bias.numel()
    # Untied: the decoder gets its own vocab x hidden weight (and, in transformers 5, its own bias).
    torch.manual_seed(0)
    untied = transformers.BertForMaskedLM(_config(tie_word_embeddings=False))
    assert count_parameters(untied) == count_parameters(model) + v * h + v


def test_count_parameters_plain_model_matches_hand_sum() -> None:
    model = _classifier()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_size_on_disk_matches_safetensors_file(tmp_path) -> None:
    model = _classifier()
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    (tmp_path / "m" / "notes.txt").write_text("not weights")
    assert size_on_disk(tmp_path / "m") == weights.stat().st_size
    assert size_on_disk(str(weights)) == weights.stat().st_size
    # Only what the folder serves: nested checkpoints / best copies and a leftover .bin do not count.
    nested = tmp_path / "m" / "best"
    nested.mkdir()
    (nested / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"x" * 10)
    assert size_on_disk(tmp_path / "m") == weights.stat().st_size
    # shards at the top level all count
    (tmp_path / "m" / "model-00002-of-00002.safetensors").write_bytes(b"x" * 7)
    assert size_on_disk(tmp_path / "m") == weights.stat().st_size + 7


def test_size_on_disk_missing_path_is_user_error(tmp_path) -> None:
    with pytest.raises(KDistillError):
        size_on_disk(tmp_path / "nope")


def test_measure_speed_numbers_are_sensible() -> None:
    model = _classifier()
    model.train()
    results = measure_speed(model, batch_sizes=(1, 4), seq_length=16, warmup=1, repeats=5)
    assert [r.batch_size for r in results] == [1, 4]
    for r in results:
        assert isinstance(r, SpeedResult)
        assert r.seq_length == 16
        assert 0 < r.p50_ms <= r.p95_ms
        assert r.mean_ms > 0
        assert r.throughput == pytest.approx(r.batch_size / (r.mean_ms / 1000))
    assert model.training  # mode restored after measuring
    assert SpeedResult.from_dict(results[0].to_dict()) == results[0]


def test_measure_speed_passes_token_type_ids_only_when_accepted() -> None:
    seen: list[set[str]] = []

    class Spy(torch.nn.Module):
        config = transformers.BertConfig(vocab_size=50, type_vocab_size=2)

        def forward(self, input_ids, attention_mask=None):  # no token_type_ids, like DistilBERT
            seen.append({"input_ids", "attention_mask"})
            assert int(input_ids.max()) < 50 and input_ids.shape == (2, 8)
            return input_ids.float().sum()

    measure_speed(Spy(), batch_sizes=(2,), seq_length=8, warmup=0, repeats=1)
    assert seen

    distil = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    )
    assert measure_speed(distil, batch_sizes=(1,), seq_length=8, warmup=0, repeats=1)[0].p50_ms > 0


def test_deeper_model_is_slower() -> None:
    shallow = _classifier(layers=1, hidden=128, inter=512)
    deep = _classifier(layers=4, hidden=128, inter=512)
    kw = dict(batch_sizes=(8,), seq_length=128, warmup=2, repeats=9, threads=1)
    t1 = measure_speed(shallow, **kw)[0].p50_ms
    t4 = measure_speed(deep, **kw)[0].p50_ms
    assert t4 > 1.5 * t1, (t1, t4)


def test_threads_restored() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    model = _classifier(layers=1)
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    measure_speed(model, batch_sizes=(1,), seq_length=8, warmup=0, repeats=2, threads=target)
    assert seen and set(seen) == {target}
    assert torch.get_num_threads() == before


def test_bad_arguments_are_user_errors() -> None:
    model = _classifier(layers=1)
    with pytest.raises(KDistillError):
        measure_speed(model, seq_length=1000)
    with pytest.raises(KDistillError):
        measure_speed(model, repeats=0)


def _speed(bs: int, p50: float, thr: float) -> dict:
    return SpeedResult(bs, 64, p50, p50 * 1.2, p50 * 1.05, thr).to_dict()


STUDENT = {
    "name": "student", "path": "runs/student", "metric": "accuracy", "score": 0.861,
    "metrics": {"accuracy": 0.861}, "params": 11_000_000, "size_bytes": 44_000_000,
    "speed": [_speed(1, 2.0, 500.0), _speed(32, 20.0, 1600.0)],
}
TEACHER = {
    "name": "teacher", "path": "runs/teacher", "metric": "accuracy", "score": 0.875,
    "metrics": {"accuracy": 0.875}, "params": 110_000_000, "size_bytes": 440_000_000,
    "speed": [_speed(1, 10.0, 100.0), _speed(32, 160.0, 200.0)],
}


def test_comparison_table_retention_and_speedup() -> None:
    table = comparison_table(STUDENT, TEACHER)
    lines = table.splitlines()
    assert len(lines) == 6  # header, rule, teacher, student, blank, what the speedup means
    header = lines[0]
    assert "Retention" in header and "Speedup bs=1" in header and "Speedup bs=32" in header
    assert "Latency bs=1 p50 / p95 (ms)" in header
    teacher_row = next(line for line in lines if line.startswith("| teacher"))
    student_row = next(line for line in lines if line.startswith("| student"))
    assert "100%" in teacher_row and "87.5%" in teacher_row
    assert "98.4%" in student_row  # 0.861 / 0.875
    assert "86.1%" in student_row
    assert "| 2.00 / 2.40 |" in student_row  # p50 / p95: the spread is in the table
    assert "5.00x" in student_row  # 10 ms / 2 ms at batch 1
    assert "8.00x" in student_row  # 160 ms / 20 ms at batch 32
    assert "unreliable" not in table  # results without a spread record are not judged
    assert "1.00x" in teacher_row
    assert "110" in teacher_row and "11.0" in student_row
    assert lines[-1] == "Speedup = teacher p50 / student p50 (>1x: the student is faster)."


def test_comparison_table_without_teacher() -> None:
    table = comparison_table(STUDENT, None)
    lines = table.splitlines()
    assert len(lines) == 3
    assert "Speedup" not in lines[0] and "Retention" not in lines[0]  # nothing to compare with
    assert "86.1%" in lines[2]
    noisy = {**STUDENT, "speed": [SpeedResult(1, 64, 2.0, 5.0, 3.0, 300.0).to_dict()]}
    assert "Latency bs=1 is noisy: p95 is 150% above p50" in comparison_table(noisy, None)


def _measured_pair(teacher_ms: list[float], student_ms: list[float], load: float = 0.5) -> tuple[dict, dict]:
    """Teacher/student dicts as `evaluate` builds them from one interleaved window at batch 1."""
    shape = ShapeTiming(1, 64, [teacher_ms, student_ms], load=load, cores=2)
    teacher = {**TEACHER, "speed": [shape.result(0).to_dict()]}
    student = {**STUDENT, "speed": [shape.result(1).to_dict()], "speedup": [speedup_of(shape, 0, 1).to_dict()]}
    return student, teacher


def test_unreliable_speedup_is_marked_in_the_table_and_explained() -> None:
    steady_t = [10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8, 10.0]
    steady_s = [5.0, 5.1, 5.0, 4.9, 5.0, 5.2, 5.0, 5.1]
    student, teacher = _measured_pair(steady_t, steady_s)
    table = comparison_table(student, teacher)
    assert "| 2.00x |" in table and "unreliable" not in table
    assert "8 alternating rounds" in table and "bs=1 1.9" in table  # the per-round range is printed
    # The same student timed while another job came and went: half its calls took 4x as long.
    student, teacher = _measured_pair(steady_t, [5.0, 20.0, 5.1, 20.2, 5.0, 19.8, 5.0, 20.0], load=3.4)
    table = comparison_table(student, teacher)
    row = next(line for line in table.splitlines() if line.startswith("| student"))
    assert "(unreliable) |" in row
    reason = next(line for line in table.splitlines() if line.startswith("Speedup bs=1 is unreliable"))
    assert "machine busy (load 3.4 on 2 cores)" in reason
    assert "spread" in reason and "student p95 vs p50" in reason and "per-round speedups range" in reason
    buf = io.StringIO()
    print_comparison(student, teacher, console=Console(file=buf, width=250, force_terminal=False))
    assert "(unreliable)" in buf.getvalue() and "machine busy (load 3.4 on 2 cores)" in buf.getvalue()


def test_print_comparison_renders_with_rich() -> None:
    buf = io.StringIO()
    print_comparison(STUDENT, TEACHER, console=Console(file=buf, width=250, force_terminal=False))
    out = buf.getvalue()
    assert "98.4%" in out and "student" in out and "teacher" in out and "Speedup = teacher p50" in out
    # A narrow console gets the transposed table: every number still complete.
    buf = io.StringIO()
    print_comparison(STUDENT, TEACHER, console=Console(file=buf, width=60, force_terminal=False))
    out = buf.getvalue()
    assert all(len(line) <= 60 for line in out.splitlines())
    assert "1600.0" in out and "8.00x" in out and "Speedup bs=32" in out and "20.00 / 24.00" in out


# ------------------------------------------------------------------------------ interleaved timing


class FakeClock:
    """Milliseconds advance only when a fake model "runs"; from call `switch` on, another job slows all calls."""

    def __init__(self, switch: int, slowdown: float = 5.0) -> None:
        self.now = 0.0
        self.calls = 0
        self.switch = switch
        self.slowdown = slowdown

    def __call__(self) -> float:
        return self.now

    def model(self, cost_ms: float):
        def run() -> None:
            factor = self.slowdown if self.calls >= self.switch else 1.0
            self.calls += 1
            self.now += cost_ms * factor / 1000.0
        return run


def test_time_interleaved_alternates_models_and_rotates_who_goes_first() -> None:
    order: list[str] = []
    calls = [lambda name=name: order.append(name) for name in "abc"]
    times = time_interleaved(calls, warmup=1, repeats=4)
    assert order == list("abc" "abc" "bca" "cab" "abc")  # warm-up round, then rounds rotated by one
    assert [len(t) for t in times] == [4, 4, 4] and all(x >= 0 for t in times for x in t)
    with pytest.raises(KDistillError):
        time_interleaved(calls, warmup=0, repeats=0)


def test_load_change_mid_window_does_not_flip_the_speedup() -> None:
    # The student does half the teacher's work (2x faster). After 20 of 40 timed calls another job starts.
    clock = FakeClock(switch=20)
    teacher, student = clock.model(2.0), clock.model(1.0)
    # One after the other (the old way): the teacher ran on a quiet machine, the student on a busy one.
    t_seq = time_interleaved([teacher], 0, 20, clock=clock)[0]
    s_seq = time_interleaved([student], 0, 20, clock=clock)[0]
    assert percentile(t_seq, 50) / percentile(s_seq, 50) == pytest.approx(0.4)  # "2.5x slower": wrong
    clock = FakeClock(switch=20)
    teacher, student = clock.model(2.0), clock.model(1.0)
    times = time_interleaved([teacher, student], 0, 20, clock=clock)
    su = assess_speedup(times[0], times[1], batch_size=1, seq_length=64, load=0.3, cores=2)
    assert su.speedup == pytest.approx(2.0) and su.low == pytest.approx(2.0) and su.high == pytest.approx(2.0)
    # The speedup survives, but the latencies themselves moved by 5x in the window: that is said, not hidden.
    assert not su.reliable and any(r.startswith("spread") for r in su.reasons)
    assert not any("per-round" in r for r in su.reasons)  # the paired rounds agree


def test_reliability_checks() -> None:
    base = [10.0, 10.1, 9.9, 10.2, 10.0, 9.8, 10.1, 10.0]
    model = [5.0, 5.0, 5.1, 4.9, 5.0, 5.1, 5.0, 4.9]
    quiet = assess_speedup(base, model, batch_size=1, seq_length=8, load=1.9, cores=2)
    assert quiet.reliable and quiet.reasons == [] and quiet.speedup == pytest.approx(2.0, rel=0.02)
    assert quiet.to_dict()["reliable"] is True and quiet.to_dict()["unreliable"] is None
    busy = assess_speedup(base, model, batch_size=1, seq_length=8, load=3.5, cores=2)
    assert busy.reasons == ["machine busy (load 3.5 on 2 cores)"] and busy.to_dict()["reliable"] is False
    assert assess_speedup(base[:3], model[:3], batch_size=1, seq_length=8).reasons == ["only 3 timed rounds"]
    # The student's calls swing between 5 and 12 ms: wide per-round ratios and a large spread.
    swinging = [5.0, 12.0, 5.0, 12.0, 5.0, 12.0, 5.0, 5.0]
    noisy = assess_speedup(base, swinging, batch_size=1, seq_length=8, names=("big", "small"))
    assert any(r.startswith("spread") and "small p95 vs p50" in r for r in noisy.reasons)
    assert any(r.startswith("per-round speedups range 0.8") for r in noisy.reasons)
    assert Speedup.from_dict(noisy.to_dict()) == noisy


def test_time_shape_records_the_worse_load_of_before_and_after() -> None:
    loads = iter([(0.4, 8), (12.5, 8)])
    shape = time_shape([lambda: None, lambda: None], 4, 16, warmup=0, repeats=3, load=lambda: next(loads))
    assert (shape.batch_size, shape.seq_length, shape.load, shape.cores) == (4, 16, 12.5, 8)
    assert shape.result(1).batch_size == 4 and shape.result(1).min_ms is not None
    assert "machine busy (load 12.5 on 8 cores)" in speedup_of(shape, 0, 1).reasons


def test_measure_speeds_times_real_models_in_alternating_rounds() -> None:
    a, b = _classifier(layers=1).eval(), _classifier(layers=2).train()
    order: list[str] = []
    a.register_forward_pre_hook(lambda *_: order.append("a"))
    b.register_forward_pre_hook(lambda *_: order.append("b"))
    shapes = measure_speeds([a, b], batch_sizes=(1, 2), seq_length=8, warmup=1, repeats=3, threads=1)
    per_shape = 2 * (1 + 3)
    assert len(order) == 2 * per_shape
    assert order[:per_shape] == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotated rounds
    assert [(s.batch_size, len(s.times_ms), len(s.times_ms[0])) for s in shapes] == [(1, 2, 3), (2, 2, 3)]
    assert b.training and not a.training  # each model's mode restored
    # measure_speed (one model) is the same measurement, kept for callers that time a single model
    assert [r.batch_size for r in measure_speed(a, batch_sizes=(1,), seq_length=8, warmup=0, repeats=2)] == [1]


def test_speed_table_markdown() -> None:
    table = speed_table([SpeedResult(1, 64, 1.5, 2.0, 1.6, 625.0), _speed(32, 20.0, 1600.0)])
    lines = table.splitlines()
    assert lines[0].startswith("| Batch") and len(lines) == 4
    assert "625.0" in lines[2] and "1600.0" in lines[3]


def test_flops_ratio_tracks_depth() -> None:
    six = flops_per_example(_config(layers=6, hidden=384, inter=1536), 128)
    three = flops_per_example(_config(layers=3, hidden=384, inter=1536), 128)
    assert 1.9 < six / three <= 2.0
    # Attention grows quadratically with sequence length, so doubling L more than doubles FLOPs.
    assert flops_per_example(_config(), 256) > 2 * flops_per_example(_config(), 128)
    # DistilBERT's attribute names are understood too.
    distil = transformers.DistilBertConfig(dim=384, n_layers=6, n_heads=6, hidden_dim=1536)
    assert flops_per_example(distil, 128) == pytest.approx(six, rel=1e-6)
