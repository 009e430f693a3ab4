"""KDTrainer under torchrun: two CPU processes (gloo) train one student with DistributedDataParallel.

The script below is an ordinary Trainer script run by `python -m torch.distributed.run --nproc_per_node 2`; each rank
writes what it saw (its batches, its per-step losses, its final weights) so the test can check the data was sharded,
the ranks stayed in sync, the logs average both ranks, and the saved student is a plain Hugging Face model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from transformers import TrainingArguments

    from kdistill.config import DataConfig, StudentConfig
    from kdistill.data import load_task_data
    from kdistill.tokenized import tokenize_splits
    from kdistill.distill.kdtrainer import KDTrainer
    from kdistill.models import load_classifier, load_tokenizer
    from kdistill.students.build import build_student

    teacher_dir, out = sys.argv[1], Path(sys.argv[2])


    class Recording(KDTrainer):
        """Keeps this rank's batches and per-step losses (the test compares them with rank 0's logs)."""

        seen, losses, terms = [], [], {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, mask = inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()
            self.seen += [[i for i, m in zip(r, k) if m] for r, k in zip(ids, mask)]
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                self.losses.append(float(loss))
            return loss


    def keep_terms(module, args, output):  # the objective's unweighted terms of each training step
        if module.training:
            for k, v in output.terms.items():
                Recording.terms.setdefault(k, []).append(float(v))


    teacher, tok = load_classifier(teacher_dir), load_tokenizer(teacher_dir)
    student = build_student(StudentConfig(num_layers=2), teacher, single_sentence=True)
    data = load_task_data(DataConfig(task="sst2", max_length=24, max_train_examples=32, max_eval_examples=8))
    train = tokenize_splits(data, tok, 24, None)["train"]
    args = TrainingArguments(output_dir=str(out / "trainer"), per_device_train_batch_size=4, num_train_epochs=1,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             ddp_backend="gloo", disable_tqdm=True, seed=42)
    losses = [{"name": "kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
              {"name": "hidden_mse"}]
    trainer = Recording(model=student, teacher=teacher, distill={"losses": losses}, args=args, train_dataset=train,
                        processing_class=tok)
    trainer.objective.register_forward_hook(keep_terms)
    trainer.train()
    trainer.save_model(str(out / "student"))
    rank = dist.get_rank()
    torch.save(trainer.student.state_dict(), out / f"weights-{rank}.pt")
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "world_size": dist.get_world_size(), "backend": dist.get_backend(), "seen": Recording.seen,
        "losses": Recording.losses, "terms": Recording.terms, "log_history": trainer.state.log_history,
        "n_train": len(train)}))
''')


def test_kdtrainer_under_torchrun_shards_data_syncs_ranks_and_averages_logs(tiny_teacher: Path,
                                                                            tmp_path: Path) -> None:
    script = tmp_path / "ddp_distill.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tiny_teacher), str(out)], capture_output=True, text=True, env=env,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)

    # the data was sharded: each rank saw its own half, and together they saw every training example once
    seen = [{tuple(x) for x in r["seen"]} for r in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == ranks[0]["n_train"] // 2
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == ranks[0]["n_train"]

    # DDP kept the two students identical, and training moved them
    w0, w1 = (torch.load(out / f"weights-{r}.pt") for r in (0, 1))
    assert max(float((w0[k] - w1[k]).abs().max()) for k in w0) < 1e-6
    initial = AutoModelForSequenceClassification.from_pretrained(tiny_teacher).state_dict()
    assert max(float((w0[k] - initial[k]).abs().max()) for k in w0 if k in initial and "layer.1." not in k) > 1e-4

    # the saved student is a plain model folder: the student alone, loaded by AutoModel*
    saved = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert saved.config.num_hidden_layers == 2
    assert saved.state_dict().keys() == w0.keys()
    assert max(float((saved.state_dict()[k] - w0[k]).abs().max()) for k in w0) == 0.0

    # rank 0's logs average both ranks: the Trainer's loss and every kd/<term> (one step per log)
    logs = [h for h in ranks[0]["log_history"] if "loss" in h]
    assert len(logs) == len(ranks[0]["losses"]) == 4
    assert max(abs(a - b) for a, b in zip(ranks[0]["losses"], ranks[1]["losses"], strict=True)) > 1e-3
    for step, h in enumerate(logs):
        assert abs(h["loss"] - (ranks[0]["losses"][step] + ranks[1]["losses"][step]) / 2) < 1e-3
        for term in ("kl", "ce", "hidden_mse"):
            both = (ranks[0]["terms"][term][step] + ranks[1]["terms"][term][step]) / 2
            assert abs(h[f"kd/{term}"] - both) < 1e-5, (step, term, h[f"kd/{term}"], both)
