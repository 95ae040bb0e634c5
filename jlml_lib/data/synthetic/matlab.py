"""Writing MATLAB files the way MATLAB does: v7.3 (HDF5 with a 512-byte MAT header, cell
arrays as object references into ``#refs#``, dimensions reversed, empties as tiny arrays) and
v5 (through scipy)."""
from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
from scipy.io import savemat

HEADER_V73 = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {date} HDF5 schema 1.00 ."


def v73_header() -> bytes:
    """The 128-byte MAT header MATLAB writes into the HDF5 user block (version 0x0200, 'IM')."""
    # a fixed date keeps the file byte-for-byte deterministic for a seed
    text = HEADER_V73.format(date=time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0)))
    head = text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return head.ljust(512, b"\x00")


class V73Writer:
    """Minimal MATLAB v7.3 writer for cell arrays of numeric arrays."""

    def __init__(self, path: Path):

        self.path = path
        self.f = h5py.File(path, "w", userblock_size=512, libver="earliest", track_order=False)
        self.refs = self.f.create_group("#refs#")
        self.n = 0

    def _name(self) -> str:
        # MATLAB names #refs# members a, b, ..., z, A, ..., then two letters; any unique name works
        self.n += 1
        return np.base_repr(self.n, 36).lower()

    def array(self, arr: np.ndarray | None, cls: str | None = None):
        """Store a MATLAB array (``None``: an empty ``[]``) in ``#refs#``; return its reference."""

        name = self._name()
        if arr is None:
            # MATLAB stores [] as its dims [0 0] (uint64) flagged MATLAB_empty
            ds = self.refs.create_dataset(name, data=np.zeros(2, np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_("double")
            ds.attrs["MATLAB_empty"] = np.uint8(1)
        else:
            ds = self.refs.create_dataset(name, data=np.ascontiguousarray(arr.T))  # column-major
            ds.attrs["MATLAB_class"] = np.bytes_(cls or {np.dtype(np.uint8): "uint8",
                                                         np.dtype(np.float64): "double"}[arr.dtype])
        return ds.ref

    def cell(self, refs: np.ndarray, name: str | None = None):
        """A cell array of references (MATLAB shape ``refs.shape``), top-level if ``name``."""

        data = np.empty(refs.shape[::-1], dtype=h5py.ref_dtype)
        data[...] = refs.T
        if name is None:
            ds = self.refs.create_dataset(self._name(), data=data)
        else:
            ds = self.f.create_dataset(name, data=data)
        ds.attrs["MATLAB_class"] = np.bytes_("cell")
        return ds.ref

    def close(self) -> None:
        self.f.close()
        with open(self.path, "r+b") as fh:
            fh.write(v73_header())


def savemat_v5(path: Path, data: dict) -> None:

    savemat(str(path), data, format="5", do_compression=True, oned_as="column")
    # scipy stamps the creation time into the header: fix it so output is deterministic
    with open(path, "r+b") as fh:
        head = fh.read(116).decode("latin-1")
        fixed = "MATLAB 5.0 MAT-file Platform: posix, Created on: Thu Jan  1 00:00:00 1970"
        fh.seek(0)
        fh.write(fixed.ljust(116).encode("latin-1")[:116] if head.startswith("MATLAB 5.0")
                 else head.encode("latin-1"))


def cellstr(strings: list[str]) -> np.ndarray:
    """An N×1 MATLAB cell array of strings for scipy.io.savemat."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s])
    return out
