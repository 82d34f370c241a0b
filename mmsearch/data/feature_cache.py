"""Frozen encoders' encodings of every row, computed once per experiment and shared by its trials.

A trial with model.finetune frozen (models/frozen.py) reads each frozen encoder's encoding of a row
from here instead of running the encoder. The cache of one encoder lives in the prepared data
directory (one per experiment), under ``features/<slot>-<key>/``:

  <modality>.npy          float32 [table rows, inputs per row, d] (memory-mapped by every reader)
  imputed_<modality>.npy  float32 [inputs per row, d]: the encoding of the imputed input
  meta.json               what the key was made of; written last: a cache without it is incomplete

The key hashes everything the encodings depend on: the encoder's class, its weights, its input
size and text length, and how the view renders text (tabular_as_text). A change to any of them is
another cache. Every row of the table (all parts) is encoded in table order, with a progress line;
a build that dies keeps the chunks it finished (``progress.json`` in the ``.partial`` directory) and
the next trial continues from there. Trials that need the same cache at once (Ray trials,
DDP ranks on one node) take a file lock: one builds, the others wait and then read it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .._atomic import atomic_write_text, file_lock
from .dataset import RowDataset

VERSION = 1  # of the cache's layout and of what an encoding means: bump to invalidate every cache
CHUNK_ROWS = 1024  # rows encoded between two progress saves


def cache_key(slot: str, encoder, view, image_size: int, max_text_len: int) -> str:
    h = hashlib.sha256()
    # only the inputs the slot reads: a text tower's encodings do not change with the image size
    # (a text-only trial has none) and an image tower's do not with the text length
    spec = {"version": VERSION, "slot": slot, "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "image_size": image_size if slot != "text" else 0, "max_text_len": max_text_len if slot != "image" else 0,
            "rendered": list(view.rendered),
            "template": view.template, "fields_first": view.fields_first}  # (which other modalities a trial reads: no matter)
    h.update(json.dumps(spec, sort_keys=True).encode())
    # the frozen weights and the buffers; a parameter that trains (a learned missing input) is
    # applied after the cached encoding (Encoder.finish), so it is not part of it
    frozen = [(n, t) for n, t in encoder.named_parameters() if not t.requires_grad] + list(encoder.named_buffers())
    for name, tensor in sorted(frozen, key=lambda item: item[0]):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def encodings(model, data, *, batch_size: int, device: torch.device, say=print) -> tuple[dict, dict]:
    """(modality -> memory-mapped [rows, n, d] encodings, modality -> imputed [n, d]) of the
    model's frozen encoders that split encode / finish; built first where missing."""
    arrays, imputed = {}, {}
    for slot in sorted(model.frozen):
        encoder = model.encoders[slot]
        if not encoder.splits:
            continue
        key = cache_key(slot, encoder, model.view, model.image_size, getattr(encoder, "max_len", 0))
        path = Path(data.dir) / "features" / f"{slot}-{key}"
        with file_lock(path.with_name(path.name + ".lock")):
            if not (path / "meta.json").is_file():
                _build(path, slot, key, model, encoder, data, batch_size, device, say)
        meta = json.loads((path / "meta.json").read_text())
        for m in meta["modalities"]:
            arrays[m] = np.load(path / f"{m}.npy", mmap_mode="r", allow_pickle=False)
            imputed[m] = torch.from_numpy(np.load(path / f"imputed_{m}.npy", allow_pickle=False))
    return arrays, imputed


@torch.no_grad()
def _build(path: Path, slot: str, key: str, model, encoder, data, batch_size: int, device, say) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    progress_file = partial / "progress.json"
    done = json.loads(progress_file.read_text())["rows"] if progress_file.is_file() else 0
    n = len(data.table)
    was_training = encoder.training
    encoder.eval().to(device)
    reads = {"image": ("image",), "text": ("text",), "pair": ("image", "text")}[slot]  # decode / tokenize only what it encodes
    rows = RowDataset.from_rows(data.table, model.view, image_size=model.image_size if "image" in reads else 0,
                                tokenize=model.tokenize if "text" in reads else None)
    say(f"encoding {n} rows with the frozen {slot} encoder ({type(encoder).__name__}), once per experiment"
        + (f": continuing after row {done}" if done else "") + f" -> {path}")
    t0, arrays = time.perf_counter(), {}
    # the imputed input's encoding: a row with every input absent
    first = next(iter(DataLoader(rows, batch_size=1)))
    blank = {k: (torch.zeros_like(v) if k.endswith("_mask") else v).to(device) for k, v in first.items()}
    for m, (value, _) in encoder.encode(blank).items():
        np.save(partial / f"imputed_{m}.npy", value[0].float().cpu().numpy())
    last_say = time.perf_counter()
    for start in range(done, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        for i, batch in enumerate(DataLoader(torch.utils.data.Subset(rows, range(start, stop)), batch_size=batch_size)):
            batch = {k: v.to(device) for k, v in batch.items()}
            for m, (value, _) in encoder.encode(batch).items():
                if m not in arrays:
                    arrays[m] = _open(partial / f"{m}.npy", (n, *value.shape[1:]))
                at = start + i * batch_size
                arrays[m][at:at + len(value)] = value.float().cpu().numpy()
        for a in arrays.values():
            a.flush()
        atomic_write_text(progress_file, json.dumps({"rows": stop}))
        if time.perf_counter() - last_say > 10 or stop == n:
            say(f"  {stop}/{n} rows encoded ({time.perf_counter() - t0:.0f} s)")
            last_say = time.perf_counter()
    encoder.train(was_training)
    modalities = sorted(f.name[len("imputed_"):-len(".npy")] for f in partial.glob("imputed_*.npy"))
    meta = {"key": key, "slot": slot, "rows": n, "modalities": modalities, "encoder": type(encoder).__name__,
            "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(partial / "meta.json", json.dumps(meta, indent=1))
    progress_file.unlink()
    os.replace(partial, path)


def _open(file: Path, shape: tuple) -> np.memmap:
    """The array being filled: reopened when a build continues, created otherwise."""
    if file.is_file():
        return np.load(file, mmap_mode="r+", allow_pickle=False)
    return np.lib.format.open_memmap(file, mode="w+", dtype=np.float32, shape=shape)
