"""Checks on saved Stable-Baselines3 model files."""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
import zlib
from collections.abc import Iterable

from stable_baselines3.common.save_util import open_path


def damaged_entry(archive: zipfile.ZipFile) -> str | None:
    """The first entry of the archive whose content fails to decompress or to match its CRC, else ``None``."""
    for info in archive.infolist():
        try:
            with archive.open(info) as entry:
                while entry.read(1 << 20):
                    pass
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError):
            return info.filename  # also an encrypted entry, or one of a compression zipfile cannot read
    return None


def check_saved_algorithm(path: str | pathlib.Path | io.BufferedIOBase, algo_name: str, marker_keys: Iterable[str]) -> None:
    """
    Refuse, with a clear message, a model file that another algorithm saved.

    Stable-Baselines3 zips store the algorithm's attributes as JSON under ``data``; an ACKTR / KFRELAX / SMAC
    file has hyperparameters no other algorithm has. Only that small JSON entry is read. Files that are not
    valid SB3 zips are left to Stable-Baselines3's own loader, which names the file in its error; a zip with an entry
    that fails its checksum (a flipped byte) is refused here, where torch would fail deep inside its unpickler.

    :param path: the path (``.zip`` may be omitted) or an open binary file (its position is restored)
    :param algo_name: the class name, for the message
    :param marker_keys: attributes every model of this algorithm saves
    :raises ValueError: if the file holds a model of another algorithm, or is damaged
    """
    file = open_path(path, "r", verbose=0, suffix="zip")
    is_user_file = isinstance(path, io.BufferedIOBase)
    position = file.tell() if is_user_file else 0
    try:
        with zipfile.ZipFile(file) as archive:
            if "data" not in archive.namelist():
                return
            damaged = damaged_entry(archive)
            if damaged is not None:
                raise ValueError(
                    f"{path} is damaged: its entry {damaged!r} does not match its checksum (the file was changed or "
                    "corrupted after it was saved)"
                )
            data = json.loads(archive.read("data").decode())
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return
    finally:
        if is_user_file:
            file.seek(position)
        else:
            file.close()
    missing = [key for key in marker_keys if key not in data]
    if missing:
        raise ValueError(
            f"{path} is not a {algo_name} model: it has no {', '.join(repr(k) for k in missing)} setting "
            f"(was it saved by another algorithm? load it with that algorithm's class)"
        )
