"""Coverage-guided fuzzing (atheris, libFuzzer) of the two readers of untrusted pickles:

  batch    controller.data.cifar.load_archive: the input is a CIFAR-100 batch pickle, packed as both members of a tar
  archive  controller.data.cifar.load_archive: the input is the archive itself (tar headers, gzip, members)
  results  controller.ledger.importer.pickle_trials: the input is a results.pkl

Per input at most 10 s and 1 GiB (libFuzzer's -timeout and -rss_limit_mb): the readers' own caps (memo, keys, tar
headers, expanded size) must hold them under that, whatever the bytes; the child process the operator reads an
archive in (controller/data/sandbox.py) is the bound beyond them.

Either may only return data or raise ConfigError; any other exception, a crash (SIGSEGV) or a hang is a finding,
saved by libFuzzer as crash-* in the working folder. Every finding becomes an entry (base64) of
tests/data/pickle-crashers.json (tests/data/test_safepickle.py loads each one in a subprocess).

    python benchmarks/fuzz_unpickle.py seed CORPUS           # write the seed corpus (real-format files)
    python benchmarks/fuzz_unpickle.py batch|results SECONDS CORPUS
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["controller"]):
    from controller.data.cifar import load_archive, synthetic
    from controller.errors import ConfigError
    from controller.ledger.importer import pickle_trials
    from controller.search.space import Space

SPACE = Space.default()


def as_archive(batch: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:  # uncompressed: the fuzzer mutates the pickle, not gzip
        for name in ("train", "test"):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(batch)
            tar.addfile(info, io.BytesIO(batch))
    return out.getvalue()


def batch_target(data: bytes) -> None:
    try:
        load_archive(as_archive(data), "fuzz")
    except ConfigError:
        pass


def archive_target(data: bytes) -> None:
    try:
        load_archive(data, "fuzz")
    except ConfigError:
        pass


def results_target(data: bytes) -> None:
    try:
        pickle_trials(data, Path("fuzz.pkl"), SPACE)
    except ConfigError:
        pass


def write_seeds(folder: Path) -> None:
    """Real-format files: CIFAR batches as the archive writes them (protocol 2, and 5 as numpy pickles it today)
    and a real hyperopt Trials results.pkl (protocols 2 and 4)."""
    import numpy as np
    from hyperopt import Trials, fmin, tpe

    ds = synthetic(120, seed=1)
    batch = {b"data": ds.train.x[:8].transpose(0, 3, 1, 2).reshape(8, -1),
             b"fine_labels": [int(v) for v in ds.train.fine[:8]],
             b"coarse_labels": [int(v) for v in ds.train.coarse[:8]]}
    (folder / "batch").mkdir(parents=True, exist_ok=True)
    for proto in (2, 5):
        (folder / "batch" / f"cifar-p{proto}").write_bytes(pickle.dumps(batch, protocol=proto))
    (folder / "archive").mkdir(parents=True, exist_ok=True)
    (folder / "archive" / "cifar-tar").write_bytes(as_archive(pickle.dumps(batch, protocol=2)))
    import gzip

    (folder / "archive" / "cifar-tar-gz").write_bytes(gzip.compress(as_archive(pickle.dumps(batch, protocol=2))))
    trials = Trials()
    fmin(lambda p: -p["coarse_labels_weight"], SPACE.hyperopt, algo=tpe.suggest, max_evals=3, trials=trials,
         rstate=np.random.default_rng(0), show_progressbar=False)
    (folder / "results").mkdir(parents=True, exist_ok=True)
    for proto in (2, 4):
        (folder / "results" / f"trials-p{proto}").write_bytes(pickle.dumps(trials, protocol=proto))


def main() -> None:
    if sys.argv[1] == "seed":
        write_seeds(Path(sys.argv[2]))
        return
    target = {"batch": batch_target, "archive": archive_target, "results": results_target}[sys.argv[1]]
    seconds, corpus = sys.argv[2], sys.argv[3]
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-print_final_stats=1", "-rss_limit_mb=1024",
                   "-malloc_limit_mb=1024", "-timeout=10", corpus], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
