"""Run directories you can trust under faults: atomic writes, a sha256 manifest, a lock, cleanup.

- :func:`atomic_write` writes a temp file next to the target, fsyncs it and renames it over the
  target (``os.replace`` is atomic on POSIX within one file system): a kill at any instant leaves
  the old or the new file, never a mix. Files get the mode the user's umask gives (``mkstemp``
  alone would make them 0600). An ``OSError`` (disk full, file-size limit, permission) becomes one
  :class:`RunDirError` line naming the file, and the temp file is removed.
- ``manifest.json`` holds the sha256 of every weights file and checkpoint of the run. A file is
  announced (its new hash accepted next to the old one) before it is renamed into place and
  settled after, so a kill between the two still verifies. :func:`verify` refuses a file whose
  hash the manifest does not accept (bit rot, a cut copy, a hand edit).
- :class:`RunLock` (``.lock``: PID and host of the holder) keeps a second process off a run dir.
- :func:`clean_stale` removes what an interrupted writer leaves behind (``.*.tmp`` files,
  ``.model.*`` temp dirs) and puts back a model directory moved aside mid-swap.
- :func:`fault` is the fault-injection hook of tests/train/test_faults.py: ``T5LAB_FAULT=POINT``
  (or ``POINT:N`` for its N-th occurrence, ``after:`` prefix optional) ends the process with
  ``os._exit(137)`` (what ``kill -9`` looks like) when the named write point is reached.

No torch at module level: the explorer and the config layer import this.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import struct
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError

MANIFEST = "manifest.json"
LOCK = ".lock"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")

FAULT_ENV = "T5LAB_FAULT"
NO_VERIFY_ENV = "T5LAB_NO_VERIFY"  # 1: skip manifest checks (the CLI's --no-verify)
_fault_counts: Counter[str] = Counter()


class RunDirError(T5LabError):
    """A run-directory file cannot be written, read or trusted (one line: the file and what to do)."""


# ------------------------------------------------------------------------------------------------
# Fault injection (tests only: nothing happens unless T5LAB_FAULT is set)
# ------------------------------------------------------------------------------------------------


def fault(*points: str) -> None:
    """End the process like ``kill -9`` when ``T5LAB_FAULT`` names one of these points (its N-th visit).

    One write point may answer to several names (``ckpt_tmp`` and ``last_ckpt_tmp``).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, nth = spec.removeprefix("after:").partition(":")
    if name not in points:
        return
    _fault_counts[name] += 1
    if _fault_counts[name] == int(nth or 1):
        os._exit(137)


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` would give a new directory under the current umask."""
    return 0o777 & ~_umask()


_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is exceeded; free some space",
    errno.EFBIG: "the file exceeds the file-size limit (ulimit -f) or the file system's; raise the limit",
    errno.EACCES: "permission denied; make the directory writable or choose another --out",
    errno.EPERM: "operation not permitted; make the directory writable or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
}


def write_error(path: str | os.PathLike, err: OSError) -> RunDirError:
    """One line for a failed write: the file, the cause and what to do."""
    advice = _ADVICE.get(err.errno or -1, "check the disk and the directory's permissions")
    cause = os.strerror(err.errno) if err.errno else str(err).splitlines()[0] if str(err) else type(err).__name__
    return RunDirError(f"cannot write {path}: {cause}; {advice}, then rerun (the previous file, if any, is unchanged)")


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Any], None],
    mode: str = "w",
    point: str | tuple[str, ...] | None = None,
    before_replace: Callable[[Path], None] | None = None,
) -> None:
    """Call ``write(fh)`` on a temp file next to ``path``, then rename it to ``path``.

    Args:
        path: The target.
        write: Writes the whole content to the open file.
        mode: ``"w"`` or ``"wb"``.
        point: Fault-injection name, reached once the temp file is complete (see :func:`fault`).
        before_replace: Called with the complete temp file just before the rename (the manifest
            announces its hash there).

    Raises:
        RunDirError: The write failed (disk full, size limit, permission); nothing changed.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if point:
            fault(*((point,) if isinstance(point, str) else point))
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(path, err) from None
        cause = None if isinstance(err, T5LabError) else _os_error_in(err)
        if cause is not None:  # torch.save wraps the file object's OSError in a RuntimeError
            raise write_error(path, cause) from None
        raise


def _os_error_in(err: BaseException) -> OSError | None:
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
        seen += 1
    return None


def atomic_write_text(path: str | os.PathLike, text: str, point: str | tuple[str, ...] | None = None) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(text), point=point)


def atomic_append_text(path: str | os.PathLike, text: str, point: str | None = None) -> None:
    """Append ``text`` to ``path`` atomically (the file is rewritten: old, or old + text)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + text, point=point)


def publish_dir(tmp: Path, path: Path, point: str | None = None) -> None:
    """Replace directory ``path`` by the complete directory ``tmp``.

    The old ``path`` is renamed to ``.NAME.old`` first and deleted after; a kill between the two
    renames leaves ``.NAME.old``, which :func:`clean_stale` puts back.
    """
    os.chmod(tmp, dir_mode())
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        fault(f"{point}_swap" if point else "swap")
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_dir(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    run_dir: str | os.PathLike | None = None,
    point: str | None = None,
) -> Path:
    """Write a whole directory atomically: ``write(tmp)`` fills a sibling temp dir that replaces ``path``.

    With ``run_dir``, the hashes of the weights files are announced to its manifest before the swap
    and settled after (files of the old directory that the new one lacks are dropped).

    Raises:
        RunDirError: A write failed (disk full, size limit, permission); ``path`` is unchanged.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        write(tmp)
        for f in tmp.rglob("*"):  # some writers (safetensors) create 0600 files: follow the umask
            os.chmod(f, dir_mode() if f.is_dir() else file_mode())
        if point:
            fault(f"{point}_tmp")
        entries: dict[str, str] = {}
        gone: list[str] = []
        if run_dir is not None:
            entries = {relative(run_dir, path / f.relative_to(tmp)): sha256_file(f) for f in _weights(tmp)}
            gone = [r for r in (relative(run_dir, f) for f in _weights(path)) if r not in entries]
            if entries:
                announce(run_dir, entries)
        publish_dir(tmp, path, point)
        if run_dir is not None and (entries or gone):
            settle(run_dir, entries, drop=gone)
    except Exception as err:
        cause = None if isinstance(err, T5LabError) else _os_error_in(err)
        if cause is not None:
            raise write_error(path, cause) from None
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _weights(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(f for f in directory.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


# ------------------------------------------------------------------------------------------------
# Manifest
# ------------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(run_dir: str | os.PathLike) -> dict[str, list[str]]:
    """``{relative path: [accepted sha256, ...]}``; empty when the run has no manifest."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        return {str(k): [str(h) for h in v] for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        raise RunDirError(
            f"{path}: not a valid manifest (cut or edited); delete it to load the run without checks"
        ) from None


def _write_manifest(run_dir: Path, files: dict[str, list[str]]) -> None:
    text = json.dumps({"version": 1, "algorithm": "sha256", "files": dict(sorted(files.items()))}, indent=1) + "\n"
    atomic_write_text(run_dir / MANIFEST, text, point="manifest")


def relative(run_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` relative to ``run_dir``, POSIX style (the manifest's keys)."""
    return Path(os.path.relpath(Path(path).absolute(), Path(run_dir).absolute())).as_posix()


def announce(run_dir: str | os.PathLike, entries: dict[str, str]) -> None:
    """Accept the new hashes next to the current ones (before the files are renamed into place)."""
    run_dir = Path(run_dir)
    files = read_manifest(run_dir)
    for rel, digest in entries.items():
        files[rel] = [h for h in files.get(rel, []) if h != digest][-1:] + [digest]
    _write_manifest(run_dir, files)


def settle(run_dir: str | os.PathLike, entries: dict[str, str], drop: Iterable[str] = ()) -> None:
    """Accept only the new hashes (after the rename); forget ``drop`` (files that no longer exist)."""
    run_dir = Path(run_dir)
    files = read_manifest(run_dir)
    for rel in drop:
        files.pop(rel, None)
    for rel, digest in entries.items():
        files[rel] = [digest]
    _write_manifest(run_dir, files)


def manifest_root(path: str | os.PathLike) -> Path | None:
    """The run directory whose manifest covers ``path`` (a parent holding manifest.json), or None."""
    p = Path(path).absolute()
    for parent in list(p.parents)[:4]:
        if (parent / MANIFEST).is_file():
            return parent
    return None


def verification_on(verify: bool | None = None) -> bool:
    """Whether to check hashes: ``verify`` if given, else on unless ``T5LAB_NO_VERIFY=1``."""
    if verify is not None:
        return verify
    return os.environ.get(NO_VERIFY_ENV, "") in ("", "0")


@contextlib.contextmanager
def no_verify() -> Iterator[None]:
    """Skip the manifest checks inside the block (the CLI's ``--no-verify``)."""
    old = os.environ.get(NO_VERIFY_ENV)
    os.environ[NO_VERIFY_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(NO_VERIFY_ENV, None)
        else:
            os.environ[NO_VERIFY_ENV] = old


def verify(path: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> bool:
    """Raise RunDirError when the manifest lists ``path`` and its hash is not an accepted one.

    Returns:
        True when the file was checked, False when no manifest lists it (nothing to check).
    """
    path = Path(path)
    root = Path(run_dir) if run_dir is not None else manifest_root(path)
    if root is None:
        return False
    files = read_manifest(root)
    rel = relative(root, path)
    if rel not in files:
        return False
    if not path.is_file() or sha256_file(path) not in files[rel]:
        raise RunDirError(
            f"{path}: sha256 does not match {root / MANIFEST} (the file changed or was damaged after it was "
            "saved); restore it or retrain, or skip the check with --no-verify / verify=False"
        )
    return True


def verify_model_dir(model_dir: str | os.PathLike, verify_hashes: bool = True) -> None:
    """Check a saved model directory before loading it: safetensors headers whole, hashes accepted."""
    model_dir = Path(model_dir)
    for f in sorted(model_dir.glob("*.safetensors")):
        check_safetensors(f)
        if verify_hashes:
            verify(f)


# ------------------------------------------------------------------------------------------------
# Readable-file checks (one line each, no torch)
# ------------------------------------------------------------------------------------------------


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: str | os.PathLike) -> list[str]:
    """The tensor names of a safetensors file, or RunDirError when it is cut or its header is bad.

    Layout (huggingface/safetensors README): 8-byte little-endian header length, a JSON header of
    ``name -> {dtype, shape, data_offsets}``, then the data; every offset must lie inside the file.
    """
    path = Path(path)
    fix = "restore the file or retrain (the run's checkpoints/last.ckpt still holds the weights)"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise RunDirError(f"{path}: truncated ({size} bytes, no safetensors header); {fix}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise RunDirError(f"{path}: bad or truncated safetensors header (says {n} bytes, file has {size}); {fix}")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise RunDirError(f"{path}: bad safetensors header (not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise RunDirError(f"{path}: bad safetensors header (not a table of tensors); {fix}")
    data = size - 8 - n
    names = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise RunDirError(f"{path}: bad safetensors header (tensor {name!r} has no data_offsets); {fix}") from None
        if not 0 <= start <= end <= data:
            raise RunDirError(f"{path}: truncated (tensor {name!r} ends at byte {end} of {data}); {fix}")
        width = _DTYPE_BYTES.get(str(info.get("dtype")))
        shape = info.get("shape")
        if width is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise RunDirError(f"{path}: bad safetensors header (tensor {name!r}: dtype {info.get('dtype')!r}, shape {shape!r}); {fix}")
        if math.prod(shape) * width != end - start:
            raise RunDirError(f"{path}: bad safetensors header (tensor {name!r} does not fill its byte range); {fix}")
        names.append(name)
    return names


def check_complete(model: Any, model_dir: str | os.PathLike) -> None:
    """Raise RunDirError when the loaded ``model`` has tensors its safetensors files lack.

    transformers fills such tensors with fresh random values and only logs it; for a saved run
    that means a damaged or foreign weights file. Tied tensors (an LM head sharing the embedding)
    are stored once and count as present.
    """
    model_dir = Path(model_dir)
    saved: set[str] = set()
    for f in sorted(model_dir.glob("*.safetensors")):
        saved.update(check_safetensors(f))
    if not saved:
        return
    state = model.state_dict()
    present = {state[k].data_ptr() for k in saved if k in state}
    missing = [k for k, v in state.items() if k not in saved and v.data_ptr() not in present]
    if missing:
        raise RunDirError(
            f"{model_dir}: the saved weights lack {len(missing)} tensor(s) of the model (e.g. {missing[0]}); "
            "the weights file is incomplete or from another model: restore it or retrain"
        )
    unexpected = sorted(saved - set(state))
    if unexpected:
        raise RunDirError(
            f"{model_dir}: the saved weights hold {len(unexpected)} tensor(s) the model has not (e.g. {unexpected[0]}); "
            "config.json and the weights are of different models: restore them or retrain"
        )


def load_checkpoint(path: str | os.PathLike, verify_hash: bool | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with every failure as one RunDirError line.

    Never unpickles code; a pickle that needs more than tensors and plain values is refused
    without torch's advice to retry with ``weights_only=False``.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if verification_on(verify_hash):  # None: on unless T5LAB_NO_VERIFY=1 (--no-verify)
        verify(path)
    fix = "delete it to resume from an older checkpoint, or start a new run"
    try:
        with warnings.catch_warnings():
            # a raw pickle (not torch.save's format) makes torch warn about its protocol before the
            # refusal below: the user gets the one error line only
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunDirError(f"{path}: holds objects other than tensors and plain values; refusing to unpickle it; {fix}") from None
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such checkpoint") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, AttributeError, KeyError, IndexError) as err:
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise RunDirError(f"{path}: not a readable checkpoint (truncated or corrupt: {first}); {fix}") from None
    if not isinstance(state, dict):
        raise RunDirError(f"{path}: not a checkpoint (holds a {type(state).__name__}, not a dict); {fix}")
    return state


# ------------------------------------------------------------------------------------------------
# Cleanup after a kill
# ------------------------------------------------------------------------------------------------


_TEMP_DIR = re.compile(r"^\.[\w.=,+-]+\.[a-z0-9_]{8}$")  # tempfile.mkdtemp(prefix=".NAME.")


def clean_stale(run_dir: str | os.PathLike) -> list[Path]:
    """Remove temp files and dirs an interrupted write left; put back a directory moved aside.

    Stale: ``.NAME.*.tmp`` files (:func:`atomic_write`), ``.NAME.xxxxxxxx`` dirs (a :func:`save_dir`
    temp dir), ``NAME.tmp`` dirs and ``.NAME.old`` / ``NAME.old`` (a swap cut between its renames:
    restored when ``NAME`` is missing, else removed).

    Returns:
        The paths removed or restored, for one message.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(run_dir):
        base = Path(root)
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                (base / name).unlink()
                found.append(base / name)
        for name in list(dirs):
            p = base / name
            if name.endswith(".old"):
                target = base / name.removeprefix(".")[:-4]
                if not target.exists():
                    os.replace(p, target)
                else:
                    shutil.rmtree(p, ignore_errors=True)
                found.append(p)
            elif _TEMP_DIR.match(name) or name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True)
                found.append(p)
            else:
                continue
        dirs[:] = [d for d in dirs if (base / d).is_dir() and not d.startswith(".") and not d.endswith((".tmp", ".old"))]
    return found


_BLOCK = re.compile(r"^(?:\[(?P<kind>\w+) step (?P<step>\d+)\b|== step (?P<ppo>\d+)$)")


def truncate_samples(path: str | os.PathLike, step: int, drop_kinds: tuple[str, ...] = ("test",)) -> bool:
    """Cut ``samples.txt`` back to the blocks a checkpoint at ``step`` has seen.

    A block starts at a header line, ``[val step S epoch E] ...`` (``t5lab train``) or
    ``== step S`` (``t5lab ppo``); blocks after ``step`` and blocks of ``drop_kinds`` (the test
    block, written after training) are dropped: the resumed run writes them again.

    Returns:
        Whether anything was cut.
    """
    path = Path(path)
    if not path.is_file():
        return False
    text = path.read_text()
    kept: list[str] = []
    keep = True
    for line in text.splitlines(keepends=True):
        m = _BLOCK.match(line)
        if m:
            s = int(m.group("step") or m.group("ppo"))
            keep = s <= step and m.group("kind") not in drop_kinds
        if keep:
            kept.append(line)
    new = "".join(kept)
    if new == text:
        return False
    atomic_write_text(path, new)
    return True


# ------------------------------------------------------------------------------------------------
# Lock
# ------------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``RUN_DIR/.lock`` held for one training / PPO process (``with RunLock(run_dir): ...``).

    Created with ``O_EXCL`` so that two processes never both hold it. A lock whose holder is gone
    (same host, PID not alive) is taken over with a message; one held by a live process (or by
    another host, which cannot be checked) is refused in one line.
    """

    def __init__(self, run_dir: str | os.PathLike, command: str = "train"):
        self.path = Path(run_dir) / LOCK
        self.command = command
        self.held = False

    def acquire(self) -> RunLock:
        host = socket.gethostname()
        me = {"pid": os.getpid(), "host": host, "command": self.command}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode())
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # being written or removed this instant: look again
                pid, where = int(holder.get("pid", -1)), str(holder.get("host", "?"))
                if where == host and not _alive(pid):
                    print(f"taking over the lock of {self.path.parent}: its holder (pid {pid} on {where}) is gone")
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                raise RunDirError(
                    f"{self.path.parent} is in use by {holder.get('command', 'a run')} (pid {pid} on {where}); "
                    f"wait for it to finish, or delete {self.path} if that process is gone"
                ) from None
            except OSError as err:
                raise write_error(self.path, err) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me) + "\n")
            self.held = True
            return self
        raise RunDirError(f"{self.path}: cannot take the lock; delete it if no run uses {self.path.parent}")

    def _holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            return data if isinstance(data, dict) else {"pid": -1, "host": socket.gethostname()}
        except ValueError:
            # an empty or cut lock file: its writer died between create and write
            return {"pid": -1, "host": socket.gethostname()} if text.strip() == "" or not text.endswith("\n") else None

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
