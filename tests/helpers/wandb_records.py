"""Reads an offline W&B run file (run-<id>.wandb) back: its run id and the rows it logged, with no network.

The file is W&B's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of
records, each [crc32c (4), length (2, little-endian), type (1): 1 full, 2 first, 3 middle, 4 last] + data;
a block tail too short for a record header is zero padding. Each assembled payload is a serialized
`wandb_internal_pb2.Record` (its protobuf schema ships with wandb). Written here from that layout, so the test
does not go through the code under test or wandb's own (Go) reader.
"""

import glob
import json
import os
import struct

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path):
    """The assembled record payloads of a .wandb file, in order."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:4] == b":W&B" and struct.unpack("<HB", raw[4:7]) == (0xBEE1, 0), f"{path}: not a .wandb file"
    pos, parts = HEADER, []
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # padding to the next block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        if kind == 0 and length == 0:
            break
        data = raw[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, FIRST):
            parts = [data]
        else:
            parts.append(data)
        if kind in (FULL, LAST):
            yield b"".join(parts)


def read_run(run_dir):
    """{"id": run id, "rows": [{key: value} per logged row]} of an offline run folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    run_id, rows = None, []
    for data in payloads(path):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run_id = rec.run.run_id
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            rows.append({k: v for k, v in items.items() if not k.startswith("_")})  # W&B's own _step etc.
    return {"id": run_id, "rows": rows}


def offline_runs(wandb_dir):
    """The offline run folders under a W&B dir, oldest first."""
    return sorted(glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*")))
