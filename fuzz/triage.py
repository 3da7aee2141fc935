#!/usr/bin/env python3
"""Say what a fuzz input changed, field by field, against the closest seed in fuzz/corpus.

.venv/bin/python fuzz/triage.py fuzz/findings/raw/*.bin
.venv/bin/python fuzz/triage.py --minimize IN.bin [OUT.bin]   # revert changes the finding does not need
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from packing import pack, unpack  # noqa: E402


def _parts(model: onnx.ModelProto) -> dict[str, bytes]:
    g = model.graph
    parts = {
        f"model.{f.name}": model.SerializeToString() if False else getattr(model, f.name).__repr__().encode()
        for f in model.DESCRIPTOR.fields
        if f.name not in ("graph",)
    }
    for i, n in enumerate(g.node):
        parts[f"node[{i}] {n.name}"] = n.SerializeToString()
    for t in g.initializer:
        parts[f"initializer {t.name}"] = t.SerializeToString()
    for kind in ("input", "output", "value_info", "sparse_initializer"):
        for i, v in enumerate(getattr(g, kind)):
            parts[f"{kind}[{i}] {getattr(v, 'name', '')}"] = v.SerializeToString()
    return parts


def _load(data: bytes) -> tuple[onnx.ModelProto | None, bytes | None]:
    model_bytes, side = unpack(data)
    m = onnx.ModelProto()
    try:
        m.ParseFromString(model_bytes)
    except Exception:  # noqa: BLE001
        return None, side
    return m, side


def main() -> None:
    seeds = {f.name: _load(f.read_bytes()) for f in sorted((HERE / "corpus").iterdir())}
    for arg in sys.argv[1:]:
        model, side = _load(Path(arg).read_bytes())
        if model is None:
            print(f"{arg}: not parseable as ModelProto (byte-level damage)")
            continue
        mine = _parts(model)
        best = min(
            seeds, key=lambda s: len(set(_parts(seeds[s][0]).items()) ^ set(mine.items())) if seeds[s][0] else 1e9
        )
        ref = _parts(seeds[best][0])
        print(f"{arg}: closest seed {best}; side file {None if side is None else len(side)} bytes")
        for key in sorted(set(ref) | set(mine)):
            if ref.get(key) == mine.get(key):
                continue
            if key not in mine:
                print(f"  - removed {key}")
            elif key not in ref:
                print(f"  + added   {key}: {_show(key, mine[key])}")
            else:
                print(f"  ~ changed {key}:\n      was {_show(key, ref[key])}\n      now {_show(key, mine[key])}")


def _show(key: str, blob: bytes) -> str:
    kind = key.split("[")[0].split(" ")[0]
    cls = {
        "node": onnx.NodeProto,
        "initializer": onnx.TensorProto,
        "input": onnx.ValueInfoProto,
        "output": onnx.ValueInfoProto,
        "value_info": onnx.ValueInfoProto,
        "sparse_initializer": onnx.SparseTensorProto,
    }.get(kind)
    if cls is None:
        return blob.decode()[:300]
    msg = cls()
    msg.ParseFromString(blob)
    if isinstance(msg, onnx.TensorProto) and len(msg.raw_data) > 32:
        msg.raw_data = msg.raw_data[:32]
    return " ".join(str(msg).split())[:400]


# ---------------------------------------------------------------- minimizing (--minimize)


def _revert(model: onnx.ModelProto, seed: onnx.ModelProto, keys: list[str]) -> onnx.ModelProto:
    """``model`` with the changed parts named in ``keys`` put back as they are in ``seed``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, sg = out.graph, seed.graph
    for key in keys:
        head = key.split(" ")[0]
        if key.startswith("model."):
            field = key.split(".", 1)[1]
            if hasattr(getattr(seed, field), "extend"):  # repeated field
                del getattr(out, field)[:]
                getattr(out, field).extend(getattr(seed, field))
            else:
                setattr(out, field, getattr(seed, field))
        elif head.startswith("node["):
            i = int(head[5:-1])
            g.node[i].CopyFrom(sg.node[i])
        elif head == "initializer":
            name = key.split(" ", 1)[1]
            mine = next(t for t in g.initializer if t.name == name)
            mine.CopyFrom(next(t for t in sg.initializer if t.name == name))
        else:
            kind, i = head.split("[")
            getattr(g, kind)[int(i[:-1])].CopyFrom(getattr(sg, kind)[int(i[:-1])])
    return out


def minimize(path: str, out_path: str | None) -> None:
    """Revert as many changed parts as possible while the same kind of finding remains (current code)."""
    import target

    target.limits()
    target.import_project()
    data = Path(path).read_bytes()
    model, side = _load(data)
    seeds = {f.name: _load(f.read_bytes()) for f in sorted((HERE / "corpus").iterdir())}
    mine = _parts(model)
    best = min(seeds, key=lambda s: len(set(_parts(seeds[s][0]).items()) ^ set(mine.items())) if seeds[s][0] else 1e9)
    seed = seeds[best][0]
    ref = _parts(seed)
    changed = [k for k in mine if k in ref and ref[k] != mine[k]]

    def kind_of(candidate: onnx.ModelProto) -> str | None:
        try:
            target.run_one(pack(candidate.SerializeToString(), side))
        except BaseException as exc:  # noqa: BLE001
            return target.signature(exc)[0]
        return None

    now = kind_of(model)
    txt = Path(path).with_suffix(".txt")
    want = txt.read_text().split("signature: ", 1)[1].split(" @")[0] if txt.exists() else now
    print(f"{path}: seed {best}; {len(changed)} changed parts; recorded {want}, on current code: {now}")
    keep = list(changed)
    if now != want:  # another check now stops it first: find the part(s) that check rejects
        import itertools

        for size in (1, 2):
            found = next(
                (
                    set(c)
                    for c in itertools.combinations(changed, size)
                    if kind_of(_revert(model, seed, list(c))) == want
                ),
                None,
            )
            if found:
                keep = [k for k in changed if k not in found]
                print("  reverted so that it shows again:", *found, sep="\n    ")
                break
        else:
            print("  does not show on the current code")
            return
    for key in list(changed):  # one pass of one-at-a-time reverts (enough for a handful of parts)
        trial = [k for k in keep if k != key]
        if kind_of(_revert(model, seed, [k for k in changed if k not in trial])) == want:
            keep = trial
    print("  needed:", *keep, sep="\n    ")
    if out_path:
        reduced = _revert(model, seed, [k for k in changed if k not in keep])
        Path(out_path).write_bytes(pack(reduced.SerializeToString(), side))
        print(f"  wrote {out_path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--minimize"]:
        minimize(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        main()
