"""A trainer stand-in: replay a finished HF run into a new folder the way a trainer writes it.

    python -m tests.live.replay SOURCE DESTINATION --count 8 --pause 0.5 [--keep 3] [--hold-after N --go FILE]

Each `checkpoint-N/` is created in place, its safetensors written in pieces (flushed, with short
sleeps, so a partial file is visible to a reader), then the config and tokenizer files, then
`trainer_state.json` last, as the HF Trainer does. The base (step 0) is written first. With --keep,
the oldest checkpoint after the base is deleted as a new one starts, once `keep` of them exist
(TRL save_total_limit, OpenRLHF --ckpt.max_num, verl max_actor_ckpt_to_keep). Runs as its own
process; the tests stop it by its pid.
"""

import argparse
import re
import shutil
import time
from pathlib import Path

PIECES = 4


def checkpoints_of(source: Path) -> list[tuple[int, Path]]:
    found = []
    for folder in source.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if match and folder.is_dir():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def write_checkpoint(source: Path, destination: Path, piece_pause: float) -> None:
    destination.mkdir()
    weights = sorted(source.glob("*.safetensors"))
    for file in weights:
        data = file.read_bytes()
        size = -(-len(data) // PIECES)
        with open(destination / file.name, "wb") as out:
            for start in range(0, len(data), size):
                out.write(data[start:start + size])
                out.flush()
                time.sleep(piece_pause)  # a reader polling now sees a file shorter than its header declares
    for file in sorted(source.iterdir()):
        if file.suffix != ".safetensors" and file.name != "trainer_state.json" and file.is_file():
            shutil.copyfile(file, destination / file.name)
    shutil.copyfile(source / "trainer_state.json", destination / "trainer_state.json")  # last: the save is done


def checkpoints_written(destination: Path) -> list:
    return [step for step, _ in checkpoints_of(destination) if step != 0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--count", type=int, required=True, help="checkpoints after the base to replay")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between checkpoints")
    parser.add_argument("--piece-pause", type=float, default=0.05)
    parser.add_argument("--keep", type=int, default=None, help="rotate: keep this many checkpoints after the base")
    parser.add_argument("--hold-after", type=int, default=None, metavar="N",
                        help="after N checkpoints after the base, wait until the --go file exists")
    parser.add_argument("--go", type=Path, default=None, help="the file --hold-after waits for")
    args = parser.parse_args(argv)
    checkpoints = checkpoints_of(args.source)
    args.destination.mkdir(parents=True, exist_ok=True)
    written = []
    for step, folder in checkpoints[:args.count + 1]:
        if args.keep is not None and step != 0 and len(written) >= args.keep:
            shutil.rmtree(written.pop(0))  # rotation: the oldest goes as a new save starts
        target = args.destination / folder.name
        write_checkpoint(folder, target, args.piece_pause)
        if step != 0:
            written.append(target)
        print(f"wrote {target.name}", flush=True)
        if args.hold_after is not None and step != 0 and len(checkpoints_written(args.destination)) == args.hold_after:
            while not args.go.exists():  # the test lets the "trainer" go on once its reader is watching
                time.sleep(0.05)
        time.sleep(args.pause)


if __name__ == "__main__":
    main()
