"""A local stand-in for an LLM behind the OpenAI chat-completions API, for benchmarks/llm_teacher.py (issue 21).

It speaks the protocol subset `kdistill.teachers.chat.ChatTeacher` uses (POST /v1/chat/completions,
`choices[0].message.content`, `choices[0].logprobs.content[0].top_logprobs`), on 127.0.0.1, and is backed by a
fine-tuned encoder classifier, so the benchmark can measure the chat-teacher path without a real LLM:

- **Classifying** (a prompt in `kdistill.teachers.chat.DEFAULT_PROMPT`'s form): the text after the last "Text: " is
  classified by the model; the answer is the label word, and with `logprobs` requested, `top_logprobs` lists every
  label word with its log-probability from the model's softmax (so the label tokens' probabilities sum to 1, which
  a real LLM's would not).
- **Writing** (a prompt in `kdistill.generate.DEFAULT_GENERATE_PROMPT`'s form, "Write N ... label is "L""): an
  encoder cannot write text, so this is a transparent stand-in, not a language model. It draws N sentences whose
  gold label is L from a pool file (the carved SST-2 training split; never validation or test) with a generator
  seeded by the request's `seed`, and rewrites each one with the static-vector half of TinyBERT's augmentation
  (`kdistill.vectors`, GloVe 6B 50d): every content word (alphabetic, 3+ letters, not a stop word or negation) is
  replaced with probability `p_replace` by one of its `k` nearest GloVe neighbours, and at least one word is always
  replaced (so no reply is a verbatim training sentence). Neighbours are often antonyms ("boring" -> "funny"): some
  rewrites change sentiment, which is what `kdistill generate --relabel true` is there to catch. Temperature and
  seed examples in the prompt are ignored.

GET /v1/models lists the model; GET /v1/stats (not part of the protocol) counts the requests served by kind, for
the benchmark's request counts. Concurrent classification requests are batched into one forward pass (as serving
engines batch), on one torch thread by default.

    python benchmarks/llm_server.py --model runs/teacher --pool train.jsonl --port 0   # prints its base URL
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

CLASSIFY = re.compile(r"\nText: (?P<text>.*)\Z", re.DOTALL)  # kdistill.teachers.chat.DEFAULT_PROMPT's last line
WRITE = re.compile(r"Write (?P<n>\d+) .*?label is \"(?P<label>[^\"]+)\"", re.DOTALL)  # DEFAULT_GENERATE_PROMPT
STOP = frozenset(
    "the and a an of to in is it that this with for as on but its be are was by at from his her their they them "
    "not no nor never n't cannot nothing none neither without too very so than then there here who what which "
    "when where why how all any some more most much many such only just also even ever yet you your he she we our "
    "i me my has have had been being do does did can could would should will may might must".split())


class Backend:
    """The classifier, its label words, and the writer's pool and word neighbours."""

    def __init__(self, model_dir: str, pool: str | None, vectors: str, max_length: int, p_replace: float,
                 k: int, max_batch: int = 32) -> None:
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        cfg = self.model.config
        self.labels = [str(cfg.id2label[i]) for i in range(cfg.num_labels)]
        self.max_length, self.p_replace, self.k = max_length, p_replace, k
        self.lock, self.waiting_lock = threading.Lock(), threading.Lock()
        self.waiting: list[dict[str, Any]] = []
        self.max_batch = max_batch
        self.stats: dict[str, float] = {"classify": 0, "write": 0, "bad_request": 0, "forward_passes": 0,
                                        "classify_seconds": 0.0,
                                        "write_seconds": 0.0}
        self.pool: dict[str, list[str]] = {name: [] for name in self.labels}
        self.vectors: Any = None
        self.neighbours: dict[str, list[str]] = {}
        if pool:
            for line in Path(pool).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.pool[self.labels[int(row["label"])]].append(str(row["sentence"]))
            from kdistill.vectors import load_vectors

            self.vectors = load_vectors(vectors)

    def classify(self, text: str) -> list[float]:
        """Log-probabilities of the labels for one text (log_softmax of the logits).

        Requests that arrive while the model is busy are served together in one padded forward pass (up to
        `max_batch`), as serving engines batch concurrent requests: whichever request thread takes the model lock
        runs everything waiting.
        """
        slot: dict[str, Any] = {"text": text, "out": None}
        with self.waiting_lock:
            self.waiting.append(slot)
        while slot["out"] is None:
            with self.lock:
                if slot["out"] is not None:
                    break
                with self.waiting_lock:
                    batch, self.waiting = self.waiting[:self.max_batch], self.waiting[self.max_batch:]
                enc = self.tok([b["text"] for b in batch], truncation=True, max_length=self.max_length,
                               padding=True, return_tensors="pt")
                with torch.no_grad():
                    lps = torch.log_softmax(self.model(**enc).logits.float(), -1).tolist()
                self.stats["forward_passes"] += 1
                for b, lp in zip(batch, lps, strict=True):
                    b["out"] = lp
        return slot["out"]

    def _near(self, words: list[str]) -> None:
        todo = sorted({w for w in words if w not in self.neighbours and w in self.vectors})
        if todo:
            with self.lock:
                self.neighbours.update(self.vectors.nearest(todo, self.k))

    def rewrite(self, text: str, rng: np.random.Generator) -> str:
        """Replace content words by GloVe neighbours (probability p_replace each; at least one word)."""
        words = text.split()
        eligible = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 3 and w not in STOP]
        self._near([words[i] for i in eligible])
        eligible = [i for i in eligible if self.neighbours.get(words[i])]
        if not eligible:
            return text
        chosen = [i for i in eligible if rng.random() < self.p_replace] or [int(rng.choice(eligible))]
        for i in chosen:
            options = self.neighbours[words[i]]
            words[i] = options[int(rng.integers(len(options)))]
        return " ".join(words)

    def write(self, n: int, label: str, seed: int) -> str:
        """N rewritten pool sentences of `label`, one per line."""
        pool = self.pool.get(label) or []
        if not pool:
            raise ValueError(f"no pool sentences for label {label!r} (start the server with --pool)")
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        return "\n".join(self.rewrite(pool[int(i)], rng) for i in picks)


def completion(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    """One chat-completions reply for `body`; raises ValueError for a request it cannot serve."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise ValueError("messages must be a non-empty list")
    prompt = str(messages[-1].get("content", ""))
    t0 = time.perf_counter()
    logprobs = None
    if (m := CLASSIFY.search(prompt)) is not None:
        lps = backend.classify(m.group("text"))
        best = int(np.argmax(lps))
        content = backend.labels[best]
        if body.get("logprobs"):
            top = sorted(({"token": name, "logprob": lp, "bytes": list(name.encode())}
                          for name, lp in zip(backend.labels, lps, strict=True)), key=lambda a: -a["logprob"])
            logprobs = {"content": [{"token": content, "logprob": lps[best], "bytes": list(content.encode()),
                                     "top_logprobs": top[:int(body.get("top_logprobs") or len(top))]}]}
        kind = "classify"
    elif (m := WRITE.search(prompt)) is not None:
        seed = body.get("seed")
        content = backend.write(int(m.group("n")), m.group("label"), int(seed) if seed is not None else 0)
        kind = "write"
    else:
        raise ValueError("the prompt is neither a classification ('...\\nText: <text>') nor a writing request "
                         "('Write N ... label is \"L\"')")
    backend.stats[kind] += 1
    backend.stats[f"{kind}_seconds"] += time.perf_counter() - t0
    return {"id": f"chatcmpl-{int(backend.stats['classify'] + backend.stats['write'])}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                         "finish_reason": "stop"}]}


def make_handler(backend: Backend, name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            elif self.path.rstrip("/") == "/v1/stats":
                self._send(200, backend.stats)
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                self._send(200, completion(backend, json.loads(raw)))
            except (ValueError, KeyError, TypeError) as err:
                backend.stats["bad_request"] += 1
                self._send(400, {"error": {"message": str(err), "type": "invalid_request_error"}})

        def log_message(self, *args: Any) -> None:  # one line per request would flood the benchmark's log
            pass

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="fine-tuned sequence classifier folder")
    ap.add_argument("--name", default="encoder-as-llm", help="the served model's name")
    ap.add_argument("--pool", default=None, help="JSONL of {sentence, label} the writer draws from")
    ap.add_argument("--vectors", default="glove-6b-50d", help="word vectors of the writer's replacements")
    ap.add_argument("--p-replace", type=float, default=0.3, help="probability of replacing each content word")
    ap.add_argument("--k", type=int, default=8, help="nearest neighbours a replacement is drawn from")
    ap.add_argument("--max-length", type=int, default=64, help="tokens the classifier reads")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spin-waiting on busy cores)")
    ap.add_argument("--max-batch", type=int, default=32, help="concurrent requests served in one forward pass")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = Backend(args.model, args.pool, args.vectors, args.max_length, args.p_replace, args.k, args.max_batch)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(backend, args.name))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
