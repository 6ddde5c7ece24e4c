"""Export a trained run's backbone as a shipped default: fp16 safetensors plus its sidecar.

    python scripts/export_backbone.py RUN_DIR src/simattr/weights/NAME.safetensors \
        --command "simattr train-ssl ..." --wall-seconds 4200

Halving the weights to fp16 keeps the file small; :func:`simattr.models.load_backbone` casts
them back to float32. The sidecar keeps everything the run recorded (architecture, method,
epochs, kNN accuracy, input statistics, data fingerprint) and adds how the run was made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file, save_file

from simattr._io import atomic_path, read_json, sidecar_path, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--wall-seconds", type=float, required=True)
    args = parser.parse_args()

    source = args.run_dir / "backbone.safetensors"
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(source).items()}
    meta = read_json(sidecar_path(source))
    history = read_json(args.run_dir / "history.json")
    meta.update(
        dtype="float16",
        training_command=args.command,
        training_wall_seconds=args.wall_seconds,
        knn_history=[
            [r["epoch"], r["knn_accuracy"]]
            for r in history.get("epochs", history if isinstance(history, list) else [])
            if r.get("knn_accuracy") is not None
        ],
    )
    with atomic_path(args.out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    write_json(sidecar_path(args.out), meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
